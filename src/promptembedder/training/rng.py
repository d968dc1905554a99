"""Every random generator's state, saved with each checkpoint (a resumed run draws what the uninterrupted one
would) and around GradCache's two passes (a chunk's dropout repeats)."""

from __future__ import annotations

import random

import numpy as np
import torch


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
