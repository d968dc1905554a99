"""Pair classification as MTEB scores it: average precision of four similarity measures, the best one reported."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score

from ..data.task_sets import LabelledPair
from ..models.embedder import Embedder
from .encoding import encode_texts
from .sts import cosine_similarity


def pair_scores(left: np.ndarray, right: np.ndarray, labels: Sequence[int]) -> dict[str, float]:
    """AP (x100) of cosine, dot, Euclidean and Manhattan (distances negated); ``max_ap`` is the main score."""
    left = np.asarray(left, dtype=np.float64)
    right = np.asarray(right, dtype=np.float64)
    similarities = {
        "cosine": cosine_similarity(left, right),
        "dot": np.einsum("ij,ij->i", left, right),
        "euclidean": -np.linalg.norm(left - right, axis=1),
        "manhattan": -np.abs(left - right).sum(axis=1),
    }
    scores = {f"{name}_ap": 100 * float(average_precision_score(labels, sim)) for name, sim in similarities.items()}
    best = max(scores.values())
    return {"main_score": best, "max_ap": best, **scores}


def evaluate_pair_classification(model: Embedder, pairs: Sequence[LabelledPair], instruction: str | None,
                                 batch_size: int = 64, show_progress_bar: bool | None = None) -> dict[str, float]:
    """Both sentences are embedded symmetrically (same instruction, prompt_type "query")."""
    labels = [p.label for p in pairs]
    if len(set(labels)) != 2:
        raise ValueError("pair classification needs both positive and negative pairs")
    texts = [s for p in pairs for s in (p.sentence1, p.sentence2)]
    embeddings = encode_texts(model, texts, instruction, "query", batch_size, show_progress_bar)
    return {**pair_scores(embeddings[0::2], embeddings[1::2], labels), "num_pairs": len(pairs)}
