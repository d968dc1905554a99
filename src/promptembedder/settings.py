"""Checks of user-given settings, each error naming the key or flag, the value and what to do.

YAML gives values the types it guesses (`1e-3` is a string to PyYAML, `2.5` a float where a step count is
meant); `coerce_fields` turns them into the types a dataclass declares, or refuses them by name.
"""

from __future__ import annotations

import inspect
import numbers
import types
import typing

import torch

_NONE = type(None)


def _kinds(hint) -> tuple[set, bool]:
    """The base types of a hint (`float | None` -> {float}, optional)."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    args = set(typing.get_args(hint)) if union else {hint}
    return {typing.get_origin(a) or a for a in args - {_NONE}}, _NONE in args


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def coerce_value(name: str, value, hint):
    """`value` as the type `hint` declares, or a ValueError naming `name` and the value."""
    kinds, optional = _kinds(hint)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name}: a value is required, got nothing (null)")
    if bool in kinds:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    if int in kinds:
        number = _number(value) if isinstance(value, str) else value
        if isinstance(number, bool) or not isinstance(number, int | float) or not float(number).is_integer():
            raise ValueError(f"{name}: expected a whole number, got {value!r}")
        return int(number)
    if float in kinds:
        number = _number(value) if isinstance(value, str) else value
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        return float(number)
    if list in kinds:
        return list(value) if isinstance(value, list | tuple) else [value]  # one item may be given bare
    if str in kinds:
        if isinstance(value, list | dict):
            raise ValueError(f"{name}: expected a single value, got {value!r}")
        return str(value).lower() if isinstance(value, bool) else str(value)
    return value


_ABSTRACT = {int: numbers.Integral, float: numbers.Real}  # numpy's numbers pass, as Python's
_KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", list: "a list",
               dict: "a mapping"}


def check_types(config) -> None:
    """Each field of a dataclass instance has the type it declares (an edited JSON config may hold `"3"` or `null`
    where a number belongs): an error naming the key, the expected type and the value, before any comparison
    fails with "'<' not supported between 'str' and 'int'"."""
    for name, hint in typing.get_type_hints(type(config)).items():
        value = getattr(config, name)
        kinds, optional = _kinds(hint)
        if value is None and optional:
            continue
        ok = value is not None and any(isinstance(value, _ABSTRACT.get(kind, kind))
                                       and not (isinstance(value, bool) and kind in (int, float)) for kind in kinds)
        if not ok and kinds <= set(_KIND_NAMES):
            expected = " or ".join(_KIND_NAMES[k] for k in kinds) + (" or null" if optional else "")
            got = "null" if value is None else f"{value!r} ({type(value).__name__})"
            raise ValueError(f"{name}: expected {expected}, got {got}")


def coerce_fields(cls, data: dict, source: str) -> dict:
    """Every value of `data` (a config file's mapping) as the type the dataclass `cls` declares."""
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in data.items():
        try:
            out[key] = coerce_value(key, value, hints[key]) if key in hints else value
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
    return out


def check_data_specs(specs: list, named: tuple[str, ...], loader) -> list:
    """train_data entries: a named set, a file path, or {path: ..., <loader keyword>: ...}; a bare string or
    mapping counts as a one-item list. A misspelt key is named with its value."""
    if isinstance(specs, str | dict):
        specs = [specs]
    allowed = [p for p in inspect.signature(loader).parameters if p != "skip_invalid"]
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            continue
        if not isinstance(spec, dict):
            raise ValueError(f"train_data[{i}]: expected a name ({', '.join(named)}), a file path or a mapping "
                             f"with 'path', got {spec!r}")
        unknown = [k for k in spec if k not in allowed]
        if unknown:
            listing = ", ".join(f"{k!r} (value {spec[k]!r})" for k in unknown)
            raise ValueError(f"train_data[{i}]: unknown key {listing}; known keys: {', '.join(allowed)}")
        if "path" not in spec:
            raise ValueError(f"train_data[{i}]: a mapping needs 'path' (the data file), got {spec!r}")
    return list(specs)


def check_positive(config, names: tuple[str, ...], minimum: float = 0.0, strict: bool = True) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and (value <= minimum if strict else value < minimum):
            relation = ">" if strict else ">="
            raise ValueError(f"{name} must be {relation} {minimum:g}, got {value}")


def check_device(device: str | None) -> None:
    """A device string torch knows and this machine has (so `--device cuda` fails at once, not mid-run)."""
    if device is None:
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a device: use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {device}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}, {'no CUDA build' if torch.version.cuda is None else 'no GPU seen'}"
                             "): use --device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"--device {device}: this machine has {count} GPU(s) (cuda:0 .. cuda:{count - 1})")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine: use --device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps", "meta"):
        raise ValueError(f"--device {device!r}: only cpu, cuda and mps are supported")
