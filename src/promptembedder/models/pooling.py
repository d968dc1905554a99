"""Pooling token states into one vector: last non-pad token, mean over text tokens, or the first token."""

from __future__ import annotations

import torch


def pool(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    strategy: str,
    exclude_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pool (B, L, d) states with a (B, L) mask of real tokens.

    `last` takes the last position whose mask is 1, which is right for left and right padding alike.
    `mean` averages real tokens, leaving out positions in `exclude_mask` (the soft prompt by default).
    `cls` takes position 0 (the [CLS] token of encoders).
    """
    mask = attention_mask.to(hidden.dtype)
    if strategy == "last":
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (attention_mask.long() * (positions + 1)).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if strategy == "mean":
        if exclude_mask is not None:
            mask = mask * (1 - exclude_mask.to(hidden.dtype))
        total = (hidden * mask.unsqueeze(-1)).sum(dim=1)
        return total / mask.sum(dim=1, keepdim=True).clamp(min=1e-9)
    if strategy == "cls":
        return hidden[:, 0]
    raise ValueError(f"unknown pooling {strategy!r}: use mean, last or cls")
