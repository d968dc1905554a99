"""Transformers' KV cache across its versions: the keyword it travels under, one layer's states, a new cache.

P's generation (generator.py) feeds each soft token back through its cache; deep prompts (deep_prompt.py) give
frozen E a cache that already holds the prompt; a suffix prompt reads the cache of its text (backbone.py, read
once). All go through these helpers, so a renamed argument or a changed cache layout is mended in one place.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache


def cache_of(output) -> dict:
    """The KV cache as the next forward's keyword: `cache` in recent transformers, `past_key_values` before."""
    if "cache" in output:
        return {"cache": output["cache"]}
    return {"past_key_values": output["past_key_values"]}


def cache_keyword(model) -> str:
    """The keyword a model's forward takes a cache under: `cache` in recent transformers, `past_key_values` before.
    Read from the class, whose signature a hook or wrapper on the instance's `forward` cannot hide."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def layer_states(cache, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer `index`'s keys and values, each (batch, kv_heads, length, head_dim)."""
    if hasattr(cache, "layers"):
        layer = cache.layers[index]
        return layer.keys, layer.values
    return cache.key_cache[index], cache.value_cache[index]  # transformers before the per-layer cache


def new_cache(config) -> DynamicCache:
    """An empty cache shaped for the model of `config` (sliding-window layers where it has them)."""
    try:
        return DynamicCache(config=config)
    except TypeError:  # transformers before caches knew their model's layer types
        return DynamicCache()


def repeat_rows(cache, times: int):
    """The cache with each row repeated `times` times in a row (row i becomes rows i*times .. i*times+times-1), as
    generate expands it for beams: several prompts read one text's keys and values in one forward. A forward extends
    the cache it is given in place, so a cache is never handed to a second forward; this gives each reader a row."""
    if times > 1:
        cache.batch_repeat_interleave(times)
    return cache
