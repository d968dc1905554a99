"""The model a run trains, built from its settings: the method's own config takes the fields it shares with
`TrainingConfig` by name, so a setting is declared once and never copied by hand."""

from __future__ import annotations

from dataclasses import fields

import torch

from ..baselines import BackboneEmbedder, BaselineConfig, PromptTuningEmbedder
from ..config import PromptEmbedderConfig
from ..model import PromptEmbedder
from ..trainable import TrainableEmbedder
from .config import TrainingConfig

#: The run's names for model settings named otherwise in a model config: the relaxation starts at tau_start.
RENAMED = {"tau": "tau_start"}
#: Model settings a run leaves at their defaults (a test checks every other one is a TrainingConfig field).
MODEL_ONLY = frozenset({"normalize", "train_prompting_embeddings", "default_instruction", "alignment_init", "adapter",
                        "template"})
#: Baselines: how the method adapts E.
ADAPTERS = {"lora": "lora", "full": "full"}


def model_config(config: TrainingConfig) -> PromptEmbedderConfig | BaselineConfig:
    """The method's model config: every field the run also has (by name, see `RENAMED`), the rest at defaults."""
    target = PromptEmbedderConfig if config.method == "promptembedder" else BaselineConfig
    known = {f.name for f in fields(TrainingConfig)}
    values = {f.name: getattr(config, RENAMED.get(f.name, f.name)) for f in fields(target)
              if RENAMED.get(f.name, f.name) in known}
    if target is BaselineConfig:
        values["adapter"] = ADAPTERS.get(config.method, "none")
    return target(**values)


def build_model(config: TrainingConfig, device: torch.device) -> TrainableEmbedder:
    """The model a method trains, on a shared backbone reference, pooling and length limit."""
    if config.method == "promptembedder" and config.init_from:  # transfer: P trained and frozen, a fresh W
        return PromptEmbedder.for_new_backbone(config.init_from, config.embedding_model, pooling=config.pooling,
                                               device=device)
    model = model_config(config)
    if config.method == "promptembedder":
        return PromptEmbedder(model, device=device)
    if config.method == "prompt-tuning":
        return PromptTuningEmbedder(model, device=device)
    return BackboneEmbedder(model, device=device)
