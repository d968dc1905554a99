"""Reading saved files with clear errors, and the manifest that ties a saved model to what it references.

A saved PromptEmbedder keeps E and P by reference (a name or path) and only the trained weights itself. The
manifest (`manifest.json`, written last) records a format version, a hash of the model's own config and, for
each referenced model, a hash of its config, so a swapped E or an edited `num_soft_tokens` is refused on load
instead of silently giving a different model (`strict=False` / `--force` loads it anyway, with a warning).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from pathlib import Path

import torch
from safetensors import safe_open

FORMAT_VERSION = 1
#: What numpy's arrays need to unpickle (RNG keys in checkpoints from before they were stored as tensors).
NUMPY_ARRAY_GLOBALS = ("numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct", "numpy.ndarray",
                       "numpy.dtype", "numpy.dtypes.UInt32DType")
MANIFEST_FILE = "manifest.json"
#: HF config keys that say how a model was loaded or run, not what it is.
VOLATILE_KEYS = frozenset({"transformers_version", "dtype", "torch_dtype", "use_cache", "name_or_path",
                           "architectures"})


class CorruptFileError(ValueError):
    """A saved file cannot be read: truncated by a crash, or damaged."""


class UnsafeFileError(ValueError):
    """A saved file would need arbitrary code to load (a pickle naming functions or classes): never loaded."""


class ManifestWarning(UserWarning):
    """A saved model is loaded although its manifest does not match (forced), or it has no manifest."""


def _corrupt(path: Path, err: Exception, advice: str) -> CorruptFileError:
    return CorruptFileError(f"{path} is corrupt or incomplete ({type(err).__name__}: {err}); {advice}")


def read_safetensors(path: str | Path, device: str = "cpu",
                     advice: str = "save or train the model again") -> tuple[dict[str, torch.Tensor], dict]:
    """All tensors of a safetensors file and its metadata."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {advice}")
    try:
        with safe_open(path, framework="pt", device=device) as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}, handle.metadata() or {}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error type for every kind of damage
        raise _corrupt(path, err, advice) from err


def read_torch(path: str | Path, advice: str = "resume from an earlier copy, or start a new run") -> dict:
    """A torch.save'd trainer state, read with `weights_only=True`: tensors and plain values only, so a tampered
    file cannot run code. A state from before RNG states were stored as tensors holds numpy's RNG keys as an
    array: numpy's array reconstruction (no other code) is allowed for it; anything else is refused by name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {advice}")
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = _unsafe_globals(path)
        if unsafe is None:
            raise _corrupt(path, err, advice) from err
        if not set(unsafe) <= set(NUMPY_ARRAY_GLOBALS):
            raise UnsafeFileError(f"{path} needs code outside tensors and plain values to load ({', '.join(unsafe)})"
                                  "; it was not written by promptembedder and is not loaded: "
                                  f"{advice}") from None
    except Exception as err:  # a truncated zip surfaces as RuntimeError, EOFError ...
        raise _corrupt(path, err, advice) from err
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, weights_only=True)
    except Exception as err:
        raise _corrupt(path, err, advice) from err


def check_tensors(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Size]) -> None:
    """Loaded weights must fit the model and be finite: a wrong shape would be a RuntimeError from deep inside
    torch, a NaN would give NaN embeddings without a word. Each error names the file and the tensor."""
    for name, shape in expected.items():
        if name not in tensors:
            raise CorruptFileError(f"{path}: no tensor '{name}' in it; save the model again")
        tensor = tensors[name]
        if tuple(tensor.shape) != tuple(shape):
            raise CorruptFileError(f"{path}: tensor '{name}' has shape {tuple(tensor.shape)}, this model needs "
                                   f"{tuple(shape)}: the file belongs to another model or was edited; save it again")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise CorruptFileError(f"{path}: tensor '{name}' holds {bad} NaN or infinite values of "
                                   f"{tensor.numel()}; it would embed every text as NaN: save or train it again")


def _unsafe_globals(path: Path) -> list[str] | None:
    """The globals a file's pickle names beyond what weights_only allows; None when the file cannot be read."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 (damaged: reported as corrupt by the caller)
        return None


def _numpy_array_globals() -> list:
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def config_hash(config: dict) -> str:
    """A stable hash of a config's content (sorted keys; load-time keys like dtype left out)."""
    content = {k: v for k, v in config.items() if not k.startswith("_") and k not in VOLATILE_KEYS}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def manifest(config: dict, references: dict[str, object]) -> dict:
    """{format_version, config_hash, models: {field: {reference, config_hash}}} for referenced HF models."""
    return {
        "format_version": FORMAT_VERSION,
        "config_hash": config_hash(config),
        "models": {field: {"reference": reference, "config_hash": config_hash(model_config.to_dict())}
                   for field, (reference, model_config) in references.items()},
    }


def write_manifest(directory: Path, config: dict, references: dict[str, object]) -> None:
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest(config, references), indent=2) + "\n")


def verify_manifest(directory: Path, config_file: str, references: dict[str, object], strict: bool = True) -> None:
    """Compare a saved model's manifest with its config file and what was just rebuilt; refuse a mismatch unless
    `strict=False`. The config is hashed as the file has it: a config field added since the save is absent there,
    so older saves keep matching (hashing the loaded dataclass would add the new field's default)."""
    path = directory / MANIFEST_FILE
    if not path.exists():
        warnings.warn(f"{directory} has no {MANIFEST_FILE} (saved before format version {FORMAT_VERSION}): its "
                      "config and referenced models cannot be checked", ManifestWarning, stacklevel=3)
        return
    try:  # a folder in its place fails here too (IsADirectoryError): damage, not an old save
        saved = json.loads(path.read_text())
        version = saved["format_version"]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        error = _corrupt(path, err, "save the model again, or load it anyway with strict=False (CLI: --force)")
        if strict:
            raise error from err
        warnings.warn(f"{error}; its checks are skipped (forced)", ManifestWarning, stacklevel=3)
        return
    problems = []
    if not isinstance(version, int) or version > FORMAT_VERSION:
        problems.append(f"format version {version!r} is newer than this promptembedder's ({FORMAT_VERSION}): "
                        "upgrade promptembedder")
    current = manifest(json.loads((directory / config_file).read_text()), references)
    if saved.get("config_hash") != current["config_hash"]:
        problems.append("its config was edited after saving")
    for field, entry in current["models"].items():
        old = saved.get("models", {}).get(field)
        if old is None or old.get("config_hash") != entry["config_hash"]:
            was = old.get("reference") if old else "?"
            problems.append(f"{field} '{entry['reference']}' is not the model it was trained with ('{was}', whose "
                            "config differs)")
    if not problems:
        return
    message = f"{directory}: {'; '.join(problems)}"
    if strict:
        raise ValueError(f"{message}. Restore the original, or load it anyway with strict=False (CLI: --force)")
    warnings.warn(f"{message}; loading anyway (forced)", ManifestWarning, stacklevel=3)


def tied_once(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """safetensors stores each tensor once: a tied weight (Gemma's lm_head is its embedding matrix) is kept
    under its first name, and each other name maps to that one (the aliases are restored on load)."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[tuple, str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if key in first:
            aliases[name] = first[key]
        else:
            first[key] = name
            tensors[name] = tensor.contiguous()
    return tensors, aliases
