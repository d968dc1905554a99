"""Activation (gradient) checkpointing of E's transformer blocks, for every method.

transformers' `gradient_checkpointing_enable` checkpoints a layer only while the model is in training mode, and
PromptEmbedder keeps its frozen E in eval mode (no dropout): there it would silently do nothing. So each block's
`forward` is wrapped here with `torch.utils.checkpoint` (non-reentrant: works with a frozen E whose inputs need
gradients, with GradCache and with DDP), whatever the mode; the RNG state is replayed, so dropout repeats and
gradients are those of the plain run.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a HF model: members of a ModuleList whose class the model lists in `_no_split_modules`
    (the layers transformers' own checkpointing and FSDP wrap; not the embeddings, which are listed too)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return [block for module in model.modules() if isinstance(module, nn.ModuleList)
            for block in module if type(block).__name__ in names]


def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():  # no graph (GradCache's first pass, documents of prompt_on='query'): no cost
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Recompute each block of `model` in backward instead of keeping its activations; returns how many blocks.

    E needs no KV cache (it is never used to generate), and a cache would be appended to again by the recompute,
    so `use_cache` is switched off.
    """
    blocks = transformer_blocks(model)
    if not blocks:
        raise ValueError(f"gradient checkpointing: found no transformer blocks in {type(model).__name__} "
                         "(no ModuleList of the classes in its _no_split_modules)")
    for block in blocks:
        if not isinstance(block.forward, functools.partial):  # once only
            block.forward = functools.partial(_checkpointed, block.forward)
    config = getattr(model, "config", None)
    if getattr(config, "use_cache", None):
        config.use_cache = False
    return len(blocks)


def is_checkpointed(model: nn.Module) -> bool:
    """Whether `enable_gradient_checkpointing` wrapped the blocks of `model` (a path that extends a KV cache inside
    a block cannot run under it: the recompute would extend it again)."""
    return any(isinstance(block.forward, functools.partial) for block in transformer_blocks(model))
