"""Checkpoints a resumed run continues from exactly: trainable weights, optimizer, scheduler and RNG state,
written atomically (a temp folder renamed into place); and the saved models `best/` and `final/`.

Every rank calls the savers: under FSDP the whole weights and optimizer state are first gathered from all shards
(torch.distributed.checkpoint's state-dict API), then rank 0 writes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from ..hub.serialization import check_tensors, read_safetensors, read_torch, tied_once
from ..models.trainable import TrainableEmbedder
from .config import TrainingConfig
from .numerics import check_weights
from .resume import DATA_FILE
from .run_folder import write_folder
from .state import TrainerState


def save_checkpoint(directory: Path, model: TrainableEmbedder, optimizer: torch.optim.Optimizer, scheduler,
                    state: TrainerState, config: TrainingConfig, data_hashes: Mapping, rng: dict,
                    sharded: bool) -> None:
    """Atomically replace `directory` with the run's state after its last completed step (`state.global_step`)."""
    is_main = state.is_world_process_zero
    if not (is_main or sharded):
        return
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    trainable, optimizer_state = get_state_dict(model, optimizer, options=options)
    if not is_main:
        return
    check_weights(trainable.items(), "a checkpoint")
    tensors, aliases = tied_once(trainable)
    settings = asdict(config)
    saved = {"step": state.global_step, "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
             "rng": rng, "best_score": state.best_metric, "config": settings}

    def write(tmp: Path) -> None:
        save_file(tensors, tmp / "trainable.safetensors", metadata={"aliases": json.dumps(aliases)})
        torch.save(saved, tmp / "trainer_state.pt")
        (tmp / "training_config.json").write_text(json.dumps(settings, indent=2) + "\n")
        (tmp / DATA_FILE).write_text(json.dumps(data_hashes, indent=2) + "\n")

    write_folder(directory, write, state.global_step)


def load_checkpoint(directory: Path, model: TrainableEmbedder, optimizer: torch.optim.Optimizer, scheduler,
                    device: torch.device) -> dict | None:
    """Restore the weights, optimizer and scheduler from `directory`; returns the saved state (its "step",
    "best_score" and "rng", which the loop sets when it starts), or None when there is no checkpoint."""
    path = Path(directory)
    if not (path / "trainer_state.pt").exists():
        return None
    advice = "resume from an earlier copy, or start a new run with --overwrite"
    state = read_torch(path / "trainer_state.pt", advice)
    trained, metadata = read_safetensors(path / "trainable.safetensors", str(device), advice)
    check_tensors(path / "trainable.safetensors", trained, {name: t.shape for name, t in trained.items()})  # finite
    aliases = json.loads(metadata.get("aliases", "{}"))
    trained.update({alias: trained[name] for alias, name in aliases.items()})
    expected = get_model_state_dict(model, options=StateDictOptions(ignore_frozen_params=True))
    missing = sorted(set(trained) ^ set(expected))
    if missing:
        raise ValueError(f"{path}: checkpoint does not match this model's trainable parameters: {missing[:5]}")
    # Every rank reads the whole state; under FSDP each keeps its own shard of it.
    set_state_dict(model, optimizer, model_state_dict=trained, optim_state_dict=state["optimizer"],
                   options=StateDictOptions(full_state_dict=True, strict=False))
    scheduler.load_state_dict(state["scheduler"])
    return state


def save_pretrained(directory: Path, model: TrainableEmbedder, step: int, is_main: bool, sharded: bool) -> None:
    """The model's `save_pretrained` on rank 0, atomically; under FSDP with the sharded modules gathered whole."""
    if not sharded:
        if is_main:
            check_weights(((n, p) for n, p in model.named_parameters() if p.requires_grad), str(directory))
            write_folder(directory, model.save_pretrained, step)
        return
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = {f"{name}.{key}": value for name, module in model.sharded_modules().items()
             for key, value in get_model_state_dict(module, options=options).items()}
    if is_main:
        check_weights(state.items(), str(directory))
        write_folder(directory, lambda tmp: model.save_pretrained(tmp, state_dict=state), step)
