"""What every embedder here shares: a differentiable `embed` and a sentence-transformers style `encode`.

PromptEmbedder and the baselines (LoRA, prompt tuning) only implement `embed`; batching, length
sorting, progress, input checks and numpy conversion live here once.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

PROMPT_TYPES = ("query", "document")


def check_texts(texts: object) -> tuple[list[str], bool]:
    """Validate encode's input; returns the list and whether a single string was given."""
    if isinstance(texts, str):
        texts = [texts]
        single = True
    else:
        single = False
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
        if not text.strip():
            raise ValueError(f"texts[{i}] is empty: an empty text has no embedding")
    return list(texts), single


class Embedder(nn.Module):
    """Base class: subclasses implement `embed(texts, instruction, prompt_type)` returning (B, d) tensors."""

    embedding_dim: int
    normalize: bool = True
    #: Whether encoding documents needs gradients in training; when not, their embeddings can be cached.
    document_side_trainable: bool = True

    def embed(self, texts: list[str], instruction: str | None = None, prompt_type: str = "query",
              normalize: bool = True) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, texts: list[str], instruction: str | None = None, prompt_type: str = "query",
                normalize: bool = True) -> torch.Tensor:
        return self.embed(texts, instruction, prompt_type, normalize)

    def encode(
        self,
        texts: str | Sequence[str],
        instruction: str | None = None,
        batch_size: int = 32,
        normalize: bool | None = None,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        prompt_type: str = "query",
    ) -> np.ndarray | torch.Tensor:
        """Embed texts without gradients; one string gives one vector, a list gives a (n, d) matrix.

        Texts are sorted by length so each batch pads little, and results come back in input order.
        """
        texts, single = check_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if prompt_type not in PROMPT_TYPES:
            raise ValueError(f"prompt_type must be one of {PROMPT_TYPES}, got {prompt_type!r}")
        normalize = self.normalize if normalize is None else normalize
        order = np.argsort([-len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), batch_size)
        if show_progress_bar is None:
            show_progress_bar = len(starts) > 1 and sys.stderr.isatty()
        was_training = self.training
        self.eval()
        chunks = []
        try:
            with torch.inference_mode():
                for start in tqdm(starts, desc="Batches", disable=not show_progress_bar):
                    batch = [texts[i] for i in order[start : start + batch_size]]
                    chunks.append(self.embed(batch, instruction, prompt_type, normalize).float().cpu())
        finally:
            self.train(was_training)
        if chunks:
            stacked = torch.cat(chunks)
            result = torch.empty_like(stacked)
            result[torch.as_tensor(order)] = stacked
        else:
            result = torch.empty(0, self.embedding_dim)
        if single:
            result = result[0]
        return result.numpy() if convert_to_numpy else result
