"""Hard negatives mined with a model, as sentence-transformers' `mine_hard_negatives(dataset, model, ...)`.

The model comes from the caller (training knows how to load one); only its public `encode` is used, and the
ranking is done here, so data imports nothing from the layers above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .task_sets import RetrievalData

__all__ = ["TextEncoder", "mine_negatives"]

#: Texts per encode batch.
BATCH_SIZE = 64


class TextEncoder(Protocol):
    """Anything with an embedder's `encode`: (n, d) embeddings of `texts` read as `prompt_type`'s side."""

    def encode(self, texts: Sequence[str], *, batch_size: int, prompt_type: str, show_progress_bar: bool | None,
               convert_to_numpy: bool) -> np.ndarray: ...


def mine_negatives(model: TextEncoder, data: RetrievalData, top_k: int = 10) -> dict[str, str]:
    """Per query, the best-ranked document that it does not cite (the hard negative), by `model` with no prompt;
    none for a query whose best `top_k` + (the most documents any query cites) documents are all cited."""
    query_ids, doc_ids = list(data.queries), list(data.corpus)
    queries = _encode(model, [data.queries[q] for q in query_ids], "query", None)
    docs = _encode(model, [data.corpus[d] for d in doc_ids], "document", True)  # minutes on a CPU
    candidates = top_k + max(len(d) for d in data.qrels.values())
    negatives = {}
    for qid, ranked in zip(query_ids, _ranked(queries, docs, candidates), strict=True):
        for j in ranked:
            if doc_ids[j] not in data.qrels[qid]:
                negatives[qid] = doc_ids[j]
                break
    return negatives


def _encode(model: TextEncoder, texts: list[str], prompt_type: str, show_progress_bar: bool | None) -> np.ndarray:
    """Each distinct text encoded once (the same abstract twice ties exactly), rows in `texts`' order."""
    unique = list(dict.fromkeys(texts))
    embeddings = np.asarray(model.encode(unique, batch_size=BATCH_SIZE, prompt_type=prompt_type,
                                         show_progress_bar=show_progress_bar, convert_to_numpy=True))
    index = {text: i for i, text in enumerate(unique)}
    return embeddings[[index[text] for text in texts]]


def _ranked(queries: np.ndarray, docs: np.ndarray, k: int) -> list[list[int]]:
    """Per query, its `k` most cosine-similar documents' indices, best first; equal scores keep the order
    `argpartition` gives them (as evaluation's `rank`, which mined the negatives cached so far)."""
    scores = _unit_rows(queries) @ _unit_rows(docs).T
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return [sorted(row, key=lambda j, i=i: -scores[i, j]) for i, row in enumerate(top)]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(np.float64).tiny)
