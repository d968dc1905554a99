"""InfoNCE against a hand computation: in-batch and hard negatives, symmetric term, cosine invariance, gather."""

from __future__ import annotations

import math

import pytest
import torch

from promptembedder.training.infonce import info_nce


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _cross_entropy(rows: list[list[float]]) -> float:
    """Mean over rows i of -log softmax(row_i)[i], in plain Python floats."""
    total = 0.0
    for i, row in enumerate(rows):
        top = max(row)
        log_z = top + math.log(sum(math.exp(v - top) for v in row))
        total += log_z - row[i]
    return total / len(rows)


def _hand_info_nce(q, p, n=None, temperature=0.05, symmetric=False) -> float:
    q, p = q.tolist(), p.tolist()
    candidates = p + (n.tolist() if n is not None else [])
    forward = _cross_entropy([[_cos(qi, c) / temperature for c in candidates] for qi in q])
    if not symmetric:
        return forward
    backward = _cross_entropy([[_cos(pi, qj) / temperature for qj in q] for pi in p])
    return (forward + backward) / 2


@pytest.fixture
def tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 6, generator=g, dtype=torch.float64)
    p = q + 0.8 * torch.randn(4, 6, generator=g, dtype=torch.float64)
    n = torch.randn(3, 6, generator=g, dtype=torch.float64)
    return q, p, n


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("with_negatives", [False, True])
@pytest.mark.parametrize("temperature", [0.05, 0.7])
def test_matches_hand_computed_cross_entropy(tensors, symmetric, with_negatives, temperature) -> None:
    q, p, n = tensors
    negatives = n if with_negatives else None
    got = info_nce(q, p, negatives, temperature=temperature, symmetric=symmetric)
    want = _hand_info_nce(q, p, negatives, temperature=temperature, symmetric=symmetric)
    assert got.dim() == 0
    assert got.item() == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_tiny_example_by_hand() -> None:
    """Two orthogonal queries, each with its exact positive: logits [[1/T, 0], [0, 1/T]]."""
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    temperature = 0.5
    expected = math.log(1 + math.exp(-1 / temperature))  # -log(e^2 / (e^2 + e^0))
    assert info_nce(q, q.clone(), temperature=temperature).item() == pytest.approx(expected, rel=1e-6)
    # A hard negative identical to query 0 ties with its positive: row 0 gets one more e^(1/T) term.
    neg = torch.tensor([[1.0, 0.0]])
    row0 = -math.log(math.exp(2) / (2 * math.exp(2) + 1))
    row1 = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert info_nce(q, q.clone(), neg, temperature=temperature).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_hard_negatives_raise_the_loss(tensors) -> None:
    q, p, _ = tensors
    close_negatives = q + 0.01  # nearly the queries themselves: hard
    assert info_nce(q, p, close_negatives) > info_nce(q, p)


def test_invariant_to_input_scaling(tensors) -> None:
    q, p, n = tensors
    base = info_nce(q, p, n, symmetric=True)
    row_scales = torch.tensor([[0.01], [3.0], [250.0], [1.7]], dtype=torch.float64)
    scaled = info_nce(q * row_scales, p * 42.0, n * torch.tensor([[5.0], [0.2], [9.0]], dtype=torch.float64),
                      symmetric=True)
    assert scaled.item() == pytest.approx(base.item(), rel=1e-9)


def test_perfect_alignment_beats_shuffled(tensors) -> None:
    q, _, n = tensors
    perfect = info_nce(q, q.clone())
    shuffled = info_nce(q, q[[1, 2, 3, 0]])
    assert perfect < shuffled
    assert info_nce(q, q.clone(), n) < info_nce(q, q[[1, 2, 3, 0]], n)
    assert info_nce(q, q.clone(), symmetric=True) < info_nce(q, q[[3, 0, 1, 2]], symmetric=True)


def test_gradient_flows_to_all_inputs(tensors) -> None:
    q, p, n = (t.clone().requires_grad_(True) for t in tensors)
    info_nce(q, p, n, symmetric=True).backward()
    for t in (q, p, n):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_gather_concatenates_the_global_batch(tensors) -> None:
    """With a gather (as under DDP), the loss is the loss of the concatenated global batch."""
    q, p, n = tensors
    other = {"q": q.flip(0) * 2 + 0.1, "p": p.flip(0) - 0.3, "n": n[:1] * -1}  # what "rank 1" holds
    gathered = []

    def gather(t: torch.Tensor) -> torch.Tensor:
        key = next(k for k, mine in (("q", q), ("p", p), ("n", n)) if t is mine)
        gathered.append(key)
        return torch.cat([t, other[key]])  # this process is rank 0: its part comes first

    got = info_nce(q, p, n, symmetric=True, gather=gather)
    assert sorted(gathered) == ["n", "p", "q"]
    want = info_nce(torch.cat([q, other["q"]]), torch.cat([p, other["p"]]), torch.cat([n, other["n"]]),
                    symmetric=True)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
