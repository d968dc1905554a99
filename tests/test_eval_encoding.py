"""Evaluation's encoding: length-capped batches, and batches run side by side on CPU giving the same vectors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from promptembedder.evaluation.encoding import cpu_workers, encode_texts, length_batches
from promptembedder.models.embedder import Embedder


class LengthEmbedder(Embedder):
    """Deterministic vectors from characters; records which thread embedded what and in which mode."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding_dim = 8
        self.normalize = False
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.threads: set[tuple[int, int]] = set()  # (thread, torch's intra-op threads there)
        self.modes: set[bool] = set()
        self.lock = threading.Lock()

    def embed(self, texts: list[str], instruction: str | None = None, prompt_type: str = "query",
              normalize: bool = True) -> torch.Tensor:
        with self.lock:
            self.threads.add((threading.get_ident(), torch.get_num_threads()))
            self.modes.add(self.training)
        rows = [[float(len(t)), float(sum(map(ord, t)) % 97), *[float(ord(c)) for c in (t + "      ")[:6]]]
                for t in texts]
        return torch.tensor(rows) * self.scale


def test_length_batches_cover_every_text_once_longest_first_within_both_caps() -> None:
    texts = ["x" * n for n in (5, 400, 30, 1000, 12, 999, 7, 250, 3, 600)]
    batches = length_batches(texts, batch_size=3, max_chars=1999)
    assert sorted(i for batch in batches for i in batch) == list(range(len(texts)))
    lengths = [len(texts[i]) for batch in batches for i in batch]
    assert lengths == sorted(lengths, reverse=True)
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * len(texts[batch[0]]) <= 1999
    assert batches[0] == [3]  # 1000 and 999 would count as 2 x 1000 > 1999 characters
    assert [len(b) for b in batches] == [1, 2, 3, 3, 1]


def test_a_text_longer_than_the_cap_still_gets_its_own_batch() -> None:
    assert length_batches(["y" * 50_000, "z"], batch_size=8, max_chars=100) == [[0], [1]]


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("two_threads")
def test_side_by_side_batches_give_the_sequential_result_in_input_order() -> None:
    texts = [f"text {i} " + "w" * (i * 37 % 300) for i in range(200)] + ["text 3 " + "w" * 111] * 5
    model = LengthEmbedder()
    expected = model.encode(list(texts), batch_size=200, convert_to_numpy=True)
    model.train()
    got = encode_texts(model, texts, None, batch_size=4, show_progress_bar=False)
    np.testing.assert_array_equal(got, expected)
    caller = threading.get_ident()
    pool = {(thread, intra_op) for thread, intra_op in model.threads if thread != caller}
    assert (caller, 2) in model.threads  # the first batch alone, on the caller's two intra-op threads
    assert 1 <= len(pool) <= 2 and {intra_op for _, intra_op in pool} == {1}  # the rest side by side, one each
    assert model.modes == {False}  # eval for every batch, though another batch finished in between
    assert model.training  # and the caller's mode is back
    assert torch.get_num_threads() == 2  # restored after the pool


@pytest.mark.usefixtures("two_threads")
def test_models_off_the_cpu_and_single_threads_encode_one_batch_at_a_time() -> None:
    assert cpu_workers(torch.nn.Linear(2, 2, device="meta")) == 1
    assert cpu_workers(torch.nn.Linear(2, 2)) == 2
    torch.set_num_threads(1)
    model = LengthEmbedder()
    encode_texts(model, [f"t{i}" for i in range(20)], None, batch_size=4, show_progress_bar=False)
    assert model.threads == {(threading.get_ident(), 1)}
