"""STS: cosine similarity of the two embeddings, Spearman (and Pearson) correlation with gold, x100 (as MTEB)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr

from ..data.datasets import STS_INSTRUCTION, STSPair
from ..models.embedder import Embedder
from .encoding import encode_texts


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, d) matrices in float64; explicit so unnormalised embedders score correctly."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two (n, d) matrices of the same shape, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.maximum(norms, np.finfo(np.float64).tiny)


def sts_scores(gold: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
    """Spearman and Pearson x100; the Spearman is the main score."""
    spearman = float(spearmanr(gold, predicted)[0]) * 100
    return {"main_score": spearman, "spearman": spearman, "pearson": float(pearsonr(gold, predicted)[0]) * 100}


def evaluate_pairs(
    model: Embedder,
    pairs: Sequence[STSPair],
    instruction: str | None = STS_INSTRUCTION,
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
) -> dict[str, float]:
    """Spearman and Pearson (x100) of cosine similarity against gold for any list of pairs.

    Each distinct sentence is embedded once, with the same instruction and prompt_type "query" on both sides
    since STS is symmetric.
    """
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 pairs to compute a correlation, got {len(pairs)}")
    texts = [s for p in pairs for s in (p.sentence1, p.sentence2)]
    embeddings = encode_texts(model, texts, instruction, "query", batch_size, show_progress_bar)
    predicted = cosine_similarity(embeddings[0::2], embeddings[1::2])
    scores = sts_scores([p.score for p in pairs], predicted)
    return {"spearman": scores["spearman"], "pearson": scores["pearson"]}


def evaluate_sts(model: Embedder, pairs: Sequence[STSPair], instruction: str | None, batch_size: int = 64,
                 show_progress_bar: bool | None = None) -> dict[str, float]:
    """The task-runner entry: `evaluate_pairs` plus the main score and size."""
    scores = evaluate_pairs(model, pairs, instruction, batch_size, show_progress_bar)
    return {"main_score": scores["spearman"], **scores, "num_pairs": len(pairs)}
