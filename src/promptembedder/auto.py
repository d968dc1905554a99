"""One loader for every kind of model this project evaluates: saved PromptEmbedder, saved baseline, bare HF model."""

from __future__ import annotations

from pathlib import Path

import torch

from .baselines import BASELINE_CONFIG, baseline_from_pretrained
from .config import CONFIG_NAME
from .embedder import Embedder
from .model import PromptEmbedder
from .validation import check_device


def load_embedder(reference: str | Path, device: str | torch.device | None = None, pooling: str | None = None,
                  strict: bool = True) -> Embedder:
    """A saved PromptEmbedder or baseline folder, else a bare backbone (HF id, path or named default, no prompt).

    `strict=False` loads a saved PromptEmbedder whose manifest does not match (with a warning)."""
    check_device(None if device is None else str(device))
    path = Path(reference)
    if (path / CONFIG_NAME).exists():
        return PromptEmbedder.from_pretrained(path, device=device, strict=strict)
    if (path / BASELINE_CONFIG).exists():
        return baseline_from_pretrained(path, device=device, strict=strict)
    return PromptEmbedder(embedding_model=str(reference), num_soft_tokens=0, pooling=pooling, device=device).eval()
