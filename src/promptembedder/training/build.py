"""The model a run trains, from its settings (`TrainingConfig.model_config`), or a transfer's P with a fresh W; and
E alone, which mines hard negatives (and which `auto.load_embedder` gives for a bare backbone)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from ..hub.registry import sentence_transformers_max_length
from ..models.baselines import BackboneEmbedder, PromptTuningEmbedder
from ..models.prompt_embedder import PromptEmbedder
from ..models.prompt_table import PromptTableEmbedder
from ..models.trainable import TrainableEmbedder
from .config import TrainingConfig


def build_model(config: TrainingConfig, device: torch.device, instructions: Sequence[str | None] = ()
                ) -> TrainableEmbedder:
    """The model a method trains, on a shared backbone reference, pooling and length limit; `instructions` (the
    training data's) are the rows of a prompt table."""
    if config.method == "promptembedder" and config.init_from:  # transfer: P trained and frozen, a fresh W
        return PromptEmbedder.for_new_backbone(config.init_from, config.embedding_model, pooling=config.pooling,
                                               prompt_position=config.prompt_position, device=device)
    model = config.model_config
    if config.method == "promptembedder":
        return PromptEmbedder(model, device=device)
    if config.method == "prompt-tuning":
        return PromptTuningEmbedder(model, device=device)
    if config.method == "prompt-table":
        rows = ["" if text is None else text for text in instructions]
        return PromptTableEmbedder(replace(model, instructions=rows), device=device)
    return BackboneEmbedder(model, device=device)


def bare_embedder(reference: str, device: torch.device | str | None = None, pooling: str | None = None,
                  max_length: int | None = None) -> PromptEmbedder:
    """E with no prompt, in eval mode, truncating at `max_length`, by default at its sentence-transformers
    `max_seq_length` (else 512) so that it embeds as its published scores were measured."""
    max_length = max_length or sentence_transformers_max_length(reference) or 512
    return PromptEmbedder(embedding_model=str(reference), num_soft_tokens=0, pooling=pooling, device=device,
                          max_length=max_length).eval()
