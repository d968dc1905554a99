"""Encoding for evaluation: each distinct text once, through the model's batched, length-sorted `encode`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..embedder import Embedder


def encode_texts(model: Embedder, texts: Sequence[str], instruction: str | None, prompt_type: str = "query",
                 batch_size: int = 64, show_progress_bar: bool | None = None) -> np.ndarray:
    """(len(texts), d) float32 embeddings; duplicates (common in STS, SICK and 20NG) are embedded once."""
    unique = list(dict.fromkeys(texts))
    embeddings = model.encode(unique, instruction=instruction, batch_size=batch_size, prompt_type=prompt_type,
                              show_progress_bar=show_progress_bar, convert_to_numpy=True)
    if len(unique) == len(texts):
        return embeddings
    index = {text: i for i, text in enumerate(unique)}
    return embeddings[[index[text] for text in texts]]


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Unit-length rows in float64, so dot products are cosines whether or not the model normalises."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(np.float64).tiny)
