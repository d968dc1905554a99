"""What building any embedder needs (the method and its baselines alike): the device, the dtype of frozen
weights and peft LoRA, here so that neither depends on the other."""

from __future__ import annotations

import torch
from torch import nn


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def frozen_dtype(device: torch.device) -> torch.dtype:
    """Frozen weights need no fp32 master copy: bf16 on GPUs that support it halves E's memory."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def add_lora(model: nn.Module, rank: int, alpha: int) -> nn.Module:
    """peft LoRA on every linear layer: for P (`prompting_trainable='lora'`) and for the LoRA baseline on E."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, target_modules="all-linear", lora_dropout=0.0))
