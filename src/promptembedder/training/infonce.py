"""InfoNCE over cosine similarities, with in-batch and hard negatives."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Gather = Callable[[torch.Tensor], torch.Tensor]


def info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: float = 0.05,
    symmetric: bool = False,
    gather: Gather | None = None,
) -> torch.Tensor:
    """Cross-entropy of each query against every positive and hard negative of the (global) batch.

    queries, positives: (B, d); negatives: (N, d) or None. In distributed training `gather`
    concatenates a tensor over ranks (this rank's part keeping its gradient): every rank then computes
    the same global loss, and the sum of the ranks' gradients is the exact gradient of that loss.
    The symmetric term also asks each positive to find its query among all queries.
    """
    if gather is not None:
        queries, positives = gather(queries), gather(positives)
        negatives = gather(negatives) if negatives is not None else None
    if negatives is not None and negatives.shape[0] == 0:
        negatives = None
    queries, positives = F.normalize(queries, dim=-1), F.normalize(positives, dim=-1)
    candidates = positives if negatives is None else torch.cat([positives, F.normalize(negatives, dim=-1)])
    labels = torch.arange(queries.shape[0], device=queries.device)
    loss = F.cross_entropy(queries @ candidates.T / temperature, labels)
    if symmetric:
        loss = (loss + F.cross_entropy(positives @ queries.T / temperature, labels)) / 2
    return loss
