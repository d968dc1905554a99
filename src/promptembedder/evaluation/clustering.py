"""Clustering as MTEB's (legacy) clustering tasks score it: MiniBatchKMeans on the embeddings, V-measure x100."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import v_measure_score

from ..data.task_sets import LabelledTexts
from ..models.embedder import Embedder
from .encoding import encode_texts

BATCH_SIZE = 500
SEED = 42


def cluster_scores(embeddings: np.ndarray, labels: Sequence[str], seed: int = SEED) -> dict[str, float]:
    """k = number of distinct labels, MiniBatchKMeans(batch_size=500, n_init="auto", random_state=42)."""
    n_clusters = len(set(labels))
    kmeans = MiniBatchKMeans(n_clusters=n_clusters, batch_size=BATCH_SIZE, n_init="auto", random_state=seed)
    kmeans.fit(embeddings)
    v_measure = 100 * float(v_measure_score(labels, kmeans.labels_))
    return {"main_score": v_measure, "v_measure": v_measure}


def evaluate_clustering(model: Embedder, data: LabelledTexts, instruction: str | None, batch_size: int = 64,
                        show_progress_bar: bool | None = None) -> dict[str, float]:
    """All texts clustered at once (the shared data cannot rebuild MTEB's ten sets)."""
    embeddings = encode_texts(model, data.texts, instruction, "query", batch_size, show_progress_bar)
    return {**cluster_scores(embeddings, data.labels), "num_texts": len(data.texts),
            "num_clusters": len(set(data.labels))}
