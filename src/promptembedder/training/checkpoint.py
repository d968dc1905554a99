"""Checkpoints a resumed run continues from exactly: trainable weights, optimizer, scheduler and RNG state,
written atomically (a temp folder renamed into place); and the saved models `best/` and `final/`.

Every rank calls the savers: under FSDP the whole weights and optimizer state are first gathered from all shards
(torch.distributed.checkpoint's state-dict API), then rank 0 writes them.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from ..hub.serialization import check_tensors, read_safetensors, read_torch, tied_once
from .numerics import check_weights
from .resume import DATA_FILE
from .run_folder import write_folder

if TYPE_CHECKING:
    from .trainer import Trainer


def rng_state() -> dict:
    """Every generator's state as tensors and plain values, which `torch.load(weights_only=True)` reads back."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy = state["numpy"]
    if isinstance(numpy, dict):
        numpy = (numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"], numpy["has_gauss"],
                 numpy["gauss"])
    np.random.set_state(numpy)  # a checkpoint from before: numpy's own tuple
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(trainer: Trainer, rng: dict) -> None:
    """Atomically replace output_dir/checkpoint with the state of `trainer` after its last completed step."""
    if not (trainer.is_main or trainer.sharded):
        return
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    trainable, optimizer = get_state_dict(trainer.model, trainer.optimizer, options=options)
    if not trainer.is_main:
        return
    check_weights(trainable.items(), "a checkpoint")
    tensors, aliases = tied_once(trainable)
    config = asdict(trainer.config)
    state = {"step": trainer.step, "optimizer": optimizer, "scheduler": trainer.scheduler.state_dict(), "rng": rng,
             "best_score": trainer.best_score, "config": config}

    def write(tmp: Path) -> None:
        save_file(tensors, tmp / "trainable.safetensors", metadata={"aliases": json.dumps(aliases)})
        torch.save(state, tmp / "trainer_state.pt")
        (tmp / "training_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / DATA_FILE).write_text(json.dumps(trainer.data_hashes, indent=2) + "\n")

    write_folder(trainer.output_dir / "checkpoint", write, trainer.step)


def load_checkpoint(trainer: Trainer) -> dict | None:
    """Restore `trainer` (weights, optimizer, scheduler, step, best score) from output_dir/checkpoint; its RNG
    state is returned, for the loop to set when it starts (None: there is no checkpoint)."""
    path = trainer.output_dir / "checkpoint"
    if not (path / "trainer_state.pt").exists():
        return None
    advice = "resume from an earlier copy, or start a new run with --overwrite"
    state = read_torch(path / "trainer_state.pt", advice)
    trained, metadata = read_safetensors(path / "trainable.safetensors", str(trainer.device), advice)
    check_tensors(path / "trainable.safetensors", trained, {name: t.shape for name, t in trained.items()})  # finite
    aliases = json.loads(metadata.get("aliases", "{}"))
    trained.update({alias: trained[name] for alias, name in aliases.items()})
    expected = get_model_state_dict(trainer.model, options=StateDictOptions(ignore_frozen_params=True))
    missing = sorted(set(trained) ^ set(expected))
    if missing:
        raise ValueError(f"{path}: checkpoint does not match this model's trainable parameters: {missing[:5]}")
    # Every rank reads the whole state; under FSDP each keeps its own shard of it.
    set_state_dict(trainer.model, trainer.optimizer, model_state_dict=trained, optim_state_dict=state["optimizer"],
                   options=StateDictOptions(full_state_dict=True, strict=False))
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.step, trainer.best_score = state["step"], state["best_score"]
    return state["rng"]


def save_pretrained(trainer: Trainer, directory: Path) -> None:
    """The model's `save_pretrained` on rank 0, atomically; under FSDP with the sharded modules gathered whole."""
    model = trainer.model
    if not trainer.sharded:
        if trainer.is_main:
            check_weights(((n, p) for n, p in model.named_parameters() if p.requires_grad), str(directory))
            write_folder(directory, model.save_pretrained, trainer.step)
        return
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = {f"{name}.{key}": value for name, module in model.sharded_modules().items()
             for key, value in get_model_state_dict(module, options=options).items()}
    if trainer.is_main:
        check_weights(state.items(), str(directory))
        write_folder(directory, lambda tmp: model.save_pretrained(tmp, state_dict=state), trainer.step)
