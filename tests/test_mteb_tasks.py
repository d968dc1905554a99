"""Our scoring and mteb.evaluate on MTEB's own task classes agree, for every task type (tiny model, small data)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from test_evaluation import HashingEmbedder

pytest.importorskip("mteb")

from promptembedder import evaluation as E  # noqa: E402
from promptembedder.data.datasets import STSPair  # noqa: E402
from promptembedder.data.task_sets import LabelledPair, LabelledTexts, RetrievalData  # noqa: E402
from promptembedder.evaluation.mteb_tasks import evaluate_with_mteb, local_task  # noqa: E402


class NoisyHashingEmbedder(HashingEmbedder):
    """Bag of words plus a little per-text noise: batch-independent, unnormalised, and no exact cosine ties
    (ties would be ordered differently by float32 and float64 arithmetic, which is no scoring difference)."""

    def vector(self, text: str) -> np.ndarray:
        noise = np.random.RandomState(zlib.crc32(text.encode())).normal(0, 0.3, self.embedding_dim)
        return super().vector(text) + noise


WORDS = ["red", "green", "blue", "fast", "slow", "car", "apple", "tree", "river", "stone", "cloud", "paper",
         "music", "light", "dark", "cold", "warm", "black", "white"]


def sentence(i: int, n: int = 4) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n)) + f" {i}"


@pytest.fixture
def small_tasks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The real registry entries (same types, instructions, MTEB classes) with a few dozen synthetic rows each.
    """
    corpus = {f"d{i}": sentence(i, 8) for i in range(40)}
    queries = {f"q{i}": sentence(i * 3) for i in range(12)}
    qrels = {f"q{i}": {f"d{(i * 3) % 40}": 1, f"d{(i * 5 + 1) % 40}": 1} for i in range(12)}
    pool = LabelledTexts([sentence(i) for i in range(60)], [WORDS[i % 5] for i in range(60)])
    test = LabelledTexts([sentence(100 + i) for i in range(25)], [WORDS[i % 5] for i in range(25)])
    data = {
        "sts-b": [STSPair(sentence(i), sentence(i + 1 + i % 3), float(i % 6)) for i in range(30)],
        "scifact": RetrievalData(queries, corpus, qrels),
        "banking77": E.ClassificationData(pool, test),
        "mrpc": [LabelledPair(sentence(i), sentence(i + 1 + i % 3), i % 2) for i in range(30)],
        "twentynewsgroups": LabelledTexts([sentence(i, 3) for i in range(50)], [WORDS[i % 4] for i in range(50)]),
    }
    for name, value in data.items():
        spec = E.TASKS[name]
        monkeypatch.setitem(E.TASKS, name, E.TaskSpec(spec.name, spec.mteb_name, ("test",),
                                                      lambda split, value=value: value, spec.instruction,
                                                      spec.type, spec.document_prompt_type, spec.train_source))
    return list(data)


def test_every_task_type_agrees_with_mteb(small_tasks: list[str]) -> None:
    # Not a tiny random transformer: its near-equal cosines reorder with batch padding noise.
    model = NoisyHashingEmbedder(dim=32)
    ours = {name: r["main_score"] for name, r in E.evaluate(model, small_tasks, batch_size=16).items()}
    theirs = evaluate_with_mteb(model, small_tasks, batch_size=16)
    assert set(theirs) == set(small_tasks)
    for name in small_tasks:
        assert ours[name] == pytest.approx(theirs[name], abs=0.01), name
    assert len({round(v, 3) for v in ours.values()}) > 1  # real, differing scores


def test_local_task_rejects_unknown(small_tasks: list[str]) -> None:
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        local_task("nope")
