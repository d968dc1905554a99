"""Deep prompts: the soft prompt as a prefix of every layer's keys and values in a frozen decoder E.

An extension beyond the paper, which prompts E's input only. Input-level soft prompts gain power with the frozen
model's size (prompt tuning matched fine-tuning only near 10B parameters in Lester et al. 2021); P-tuning v2 (Liu
et al. 2022) closed the gap at small scale by prompting every layer. Here each layer's prefix keys and values
start as what E itself computes for the prompt read as an input prefix after BOS, plus an offset per layer that
is linear in the prompt and starts at zero. An untrained deep prompt therefore embeds exactly as `prefix` does,
and training can move each layer's prefix where an input prefix cannot reach.

The prefix goes through E's KV cache, so deep prompts need a decoder (encoders take no cache).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .kv_cache import cache_of, layer_states, new_cache


class DeepPrompt(NamedTuple):
    """A prompt in E's input space (K, d_E) and what each layer adds to its keys and values (L, 2, K, kv_size)."""

    embeds: torch.Tensor
    offsets: torch.Tensor


class KVLayout(NamedTuple):
    """How a decoder caches keys and values: per layer, `heads` key/value heads of `head_dim` each."""

    layers: int
    heads: int
    head_dim: int

    @property
    def size(self) -> int:
        return self.heads * self.head_dim


@torch.no_grad()
def kv_layout(model: nn.Module) -> KVLayout:
    """Read E's cache layout from one forward of one token: configs name it differently per architecture."""
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError("deep prompts need a decoder-only E")
    device = model.get_input_embeddings().weight.device
    out = model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device), use_cache=True)
    cache = next(iter(cache_of(out).values()), None)
    if cache is None:
        raise ValueError(f"{type(model).__name__} returned no KV cache: deep prompts need a decoder E that caches "
                         "keys and values; use prompt_position prefix or suffix")
    keys, _ = layer_states(cache, 0)
    return KVLayout(len(cache), keys.shape[1], keys.shape[-1])


class LayerOffsets(nn.Module):
    """Per layer, two linear maps (keys, values) from the prompt (K, d_E) to offsets (L, 2, K, kv_size).

    Zero at init, so a fresh deep prompt is the input prefix it starts from. Each prompt vector is scaled to unit
    length first: E's input embeddings differ in scale by more than 10x between models (Gemma multiplies its own by
    sqrt(d)), and with unit inputs one learning rate moves the offsets alike on every E.
    """

    def __init__(self, hidden_size: int, layout: KVLayout):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(layout.layers, 2, layout.size, hidden_size))

    def forward(self, prompt: torch.Tensor) -> torch.Tensor:
        unit = nn.functional.normalize(prompt.to(self.weight.dtype), dim=-1)
        return torch.einsum("kd,lcvd->lckv", unit, self.weight)


def static_offsets(num_soft_tokens: int, layout: KVLayout) -> nn.Parameter:
    """Free per-layer offsets for a static deep prompt (prompt tuning's P-tuning v2 form), zero at init."""
    return nn.Parameter(torch.zeros(layout.layers, 2, num_soft_tokens, layout.size))


def prefix_cache(model: nn.Module, head: torch.Tensor, prompt: DeepPrompt, batch: int) -> tuple[dict, int]:
    """E's cache holding `head` (the BOS embedding, or nothing) then the prompt, offsets added, for `batch` rows.

    Returns the cache keyword for E's forward and the prefix length. Built afresh per call: the forward appends
    the text's keys and values to it.
    """
    dtype = head.dtype
    prefix = torch.cat([head, prompt.embeds.to(dtype)], dim=0).unsqueeze(0)
    out = model(inputs_embeds=prefix, use_cache=True)
    keyword, source = next(iter(cache_of(out).items()))
    cache = new_cache(model.config)
    special, k = head.shape[0], prompt.embeds.shape[0]
    for index in range(prompt.offsets.shape[0]):
        keys, values = layer_states(source, index)
        shifted = []
        for states, offset in zip((keys, values), prompt.offsets[index], strict=True):
            heads, head_dim = states.shape[1], states.shape[-1]
            offset = offset.to(states.dtype).view(k, heads, head_dim).transpose(0, 1).unsqueeze(0)
            offset = nn.functional.pad(offset, (0, 0, special, 0))  # no offset on BOS
            shifted.append((states + offset).expand(batch, -1, -1, -1))
        cache.update(shifted[0], shifted[1], index)
    return {keyword: cache}, prefix.shape[1]
