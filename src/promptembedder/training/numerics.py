"""Guards against non-finite training: stop at the first NaN/inf loss or gradient, never save such weights.

A NaN step would be applied by the optimizer and poison every weight it touches; the run would then save an
all-NaN model and exit 0. The check runs before the update, so the weights (and any checkpoint) stay finite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class NonFiniteError(ValueError):
    """Training produced a NaN or infinite loss or gradient."""


ADVICE = "lower --learning-rate, raise --temperature or --tau-end, or check the data; then start again with --overwrite"


def check_step(loss: float, grad_norm: torch.Tensor | float | None, step: int) -> None:
    """Raise before the optimizer step when the loss or the gradient norm is not finite."""
    if not math.isfinite(loss):
        raise NonFiniteError(f"step {step}: the loss is {loss}; stopped before the update. {ADVICE}")
    if grad_norm is not None and not math.isfinite(float(grad_norm)):
        raise NonFiniteError(f"step {step}: the gradient norm is {float(grad_norm)}; stopped before the update. "
                             f"{ADVICE}")


def check_weights(named: Iterable[tuple[str, torch.Tensor]], where: str) -> None:
    """Refuse to save weights with a NaN or inf in them."""
    bad = [name for name, tensor in named if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise NonFiniteError(f"not writing {where}: non-finite weights in {', '.join(bad[:5])}. {ADVICE}")


def json_safe(value):
    """NaN and inf become null (JSON has no such numbers; Python would write invalid `NaN`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
