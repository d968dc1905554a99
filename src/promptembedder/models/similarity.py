"""Similarity between embeddings, as sentence-transformers names and computes it (`similarity_fn_name`).

Here so `Embedder.similarity` needs no sentence-transformers (an optional extra): the four functions it offers,
all-pairs and row-wise, on numpy arrays or tensors, with higher meaning more similar (distances are negated).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")


def as_matrix(embeddings: np.ndarray | torch.Tensor | list, name: str) -> torch.Tensor:
    """A (n, d) float tensor from a vector, a matrix or a list of vectors."""
    if isinstance(embeddings, list) and embeddings and isinstance(embeddings[0], torch.Tensor):
        embeddings = torch.stack(embeddings)
    tensor = torch.as_tensor(np.asarray(embeddings) if isinstance(embeddings, list) else embeddings)
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be one embedding or a (n, d) matrix, got shape {tuple(tensor.shape)}")
    return tensor.float()


def check_function(name: str) -> str:
    if name not in SIMILARITY_FUNCTIONS:
        raise ValueError(f"similarity_fn_name must be one of {SIMILARITY_FUNCTIONS}, got {name!r}")
    return name


def similarity(a: torch.Tensor, b: torch.Tensor, function: str = "cosine") -> torch.Tensor:
    """(n1, n2): every row of `a` against every row of `b`."""
    check_function(function)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings of different sizes: {a.shape[1]} and {b.shape[1]}")
    if function == "cosine":
        return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    if function == "dot":
        return a @ b.T
    return -torch.cdist(a, b, p=2.0 if function == "euclidean" else 1.0)


def similarity_pairwise(a: torch.Tensor, b: torch.Tensor, function: str = "cosine") -> torch.Tensor:
    """(n,): row i of `a` against row i of `b`."""
    check_function(function)
    if a.shape != b.shape:
        raise ValueError(f"pairwise similarity needs matrices of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if function == "cosine":
        return F.cosine_similarity(a, b, dim=-1)
    if function == "dot":
        return (a * b).sum(dim=-1)
    return -(a - b).norm(p=2 if function == "euclidean" else 1, dim=-1)
