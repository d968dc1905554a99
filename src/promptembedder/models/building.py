"""What building any embedder needs (the method and its baselines alike): the device, the dtype of frozen
weights and peft LoRA, here so that neither depends on the other."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def frozen_dtype(device: torch.device) -> torch.dtype:
    """Frozen weights need no fp32 master copy: bf16 on GPUs that support it halves E's memory."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@contextmanager
def _peft_quietly() -> Iterator[None]:
    """peft reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model. That FutureWarning
    is addressed to peft, and users could do nothing about it, so it is not shown to them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def add_lora(model: nn.Module, rank: int, alpha: int) -> nn.Module:
    """peft LoRA on every linear layer: for P (`prompting_trainable='lora'`) and for the LoRA baseline on E."""
    from peft import LoraConfig, get_peft_model

    with _peft_quietly():
        return get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, target_modules="all-linear",
                                                lora_dropout=0.0))


def load_lora(model: nn.Module, directory: Path, trainable: bool = False) -> nn.Module:
    """A saved peft adapter (`save_pretrained`'s folder) on ``model``."""
    from peft import PeftModel

    with _peft_quietly():
        return PeftModel.from_pretrained(model, directory, is_trainable=trainable)
