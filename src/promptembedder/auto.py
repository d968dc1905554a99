"""One loader for every kind of model this project evaluates: saved PromptEmbedder, saved baseline, bare HF model."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .export.exported import ExportedEmbedder, is_export
from .hub.serialization import verify_manifest
from .models.baselines import BackboneEmbedder, PromptTuningEmbedder
from .models.config import BASELINE_CONFIG, CONFIG_NAME, BaselineConfig
from .models.embedder import Embedder
from .models.prompt_embedder import PromptEmbedder
from .models.prompt_table import PromptTableEmbedder
from .settings import check_device
from .training.build import bare_embedder


def baseline_from_pretrained(directory: str | Path, device=None, strict: bool = True) -> Embedder:
    """Reload a saved baseline (LoRA, full fine-tune, hard text or prompt tuning); its manifest must match
    (`strict=False` only warns)."""
    directory = Path(directory)
    path = directory / BASELINE_CONFIG
    try:
        data = json.loads(path.read_text())
        data.setdefault("prompt_position", "prefix")  # saved before prompt positions existed
        config = BaselineConfig(**data)
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a readable baseline config: {err}") from err
    reference = config.embedding_model  # before load: a full fine-tune points it at its saved copy
    loaders = {"prompt-tuning": PromptTuningEmbedder, "prompt-table": PromptTableEmbedder}
    loader = loaders.get(config.method, BackboneEmbedder)
    model = loader.load(directory, config, device)
    verify_manifest(directory, BASELINE_CONFIG, {"embedding_model": (reference, model.backbone.model.config)}, strict)
    return model


def load_embedder(reference: str | Path, device: str | torch.device | None = None, pooling: str | None = None,
                  max_length: int | None = None, strict: bool = True) -> Embedder:
    """A saved PromptEmbedder or baseline folder, an exported folder (its compiled instructions), else a bare
    backbone (HF id, path or named default, no prompt).

    A bare backbone truncates at `max_length`, by default its sentence-transformers `max_seq_length`.
    `strict=False` loads a saved model whose manifest does not match (with a warning).
    """
    check_device(None if device is None else str(device))
    path = Path(reference)
    if (path / CONFIG_NAME).exists():
        return PromptEmbedder.from_pretrained(path, device=device, strict=strict)
    if (path / BASELINE_CONFIG).exists():
        return baseline_from_pretrained(path, device=device, strict=strict)
    if is_export(path):  # its compiled instructions only, never silently a bare backbone
        return ExportedEmbedder(path, device=device)
    if path.is_dir() and not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} holds no model: none of {CONFIG_NAME}, {BASELINE_CONFIG} (a saved model), "
                                "modules.json (an export) or config.json (a Hugging Face model) is in it")
    return bare_embedder(str(reference), device, pooling, max_length)
