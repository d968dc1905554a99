"""Offline STS evaluation: calibration against MTEB's published MiniLM scores, and unit tests on a fake embedder."""

from __future__ import annotations

import json
import zlib
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from promptembedder import evaluation as E
from promptembedder.data.datasets import STS_INSTRUCTION, STSPair
from promptembedder.models.embedder import Embedder


class HashingEmbedder(Embedder):
    """Bag-of-words with crc32-hashed buckets, times a per-text scale so cosine must be computed, not assumed."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.embedding_dim = dim
        self.normalize = False
        self.calls: list[tuple[list[str], str | None, str]] = []

    def vector(self, text: str) -> np.ndarray:
        out = np.zeros(self.embedding_dim)
        for word in text.lower().split():
            out[zlib.crc32(word.encode()) % self.embedding_dim] += 1.0
        return out * (1 + zlib.crc32(text.encode()) % 7)  # deliberately unnormalised

    def embed(self, texts: list[str], instruction: str | None = None, prompt_type: str = "query",
              normalize: bool = True) -> torch.Tensor:
        self.calls.append((list(texts), instruction, prompt_type))
        return torch.tensor(np.stack([self.vector(t) for t in texts]), dtype=torch.float32)


PAIRS = [
    STSPair("a man is playing a guitar", "a man plays the guitar", 4.8),
    STSPair("a woman is slicing an onion", "a woman is cutting an onion", 4.2),
    STSPair("a cat sits on the mat", "a dog runs in the park", 0.4),
    STSPair("the stock market fell sharply today", "a man is playing a guitar", 0.0),
    STSPair("children are playing in the park", "kids play in a park", 3.9),
]


def _ranks(x: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(x))
    ranks[np.argsort(x)] = np.arange(len(x))
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


@pytest.fixture
def toy_task(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register a 5-pair task so `evaluate` can be tested without the shared data."""
    spec = E.TaskSpec("toy", "Toy", ("test",), lambda split: list(PAIRS), instruction="Toy instruction.")
    monkeypatch.setitem(E.TASKS, "toy", spec)
    return "toy"


# ---------------------------------------------------------------------------------------------------
# Scoring against a hand computation
# ---------------------------------------------------------------------------------------------------


def test_scores_match_hand_computation() -> None:
    model = HashingEmbedder()
    got = E.evaluate_pairs(model, PAIRS, instruction=None, batch_size=2)
    cos = []
    for pair in PAIRS:
        a, b = model.vector(pair.sentence1), model.vector(pair.sentence2)
        cos.append(a @ b / np.sqrt((a @ a) * (b @ b)))
    cos, gold = np.array(cos), np.array([p.score for p in PAIRS])
    assert len(set(cos.round(9))) == len(cos)  # no ties, so plain ranks are Spearman's ranks
    assert got["pearson"] == pytest.approx(100 * _pearson(gold, cos), abs=1e-4)
    assert got["spearman"] == pytest.approx(100 * _pearson(_ranks(gold), _ranks(cos)), abs=1e-4)


def test_cosine_is_explicit_not_dot_product() -> None:
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[6.0, 8.0], [0.0, 5.0]])
    np.testing.assert_allclose(E.cosine_similarity(a, b), [1.0, 0.0])
    with pytest.raises(ValueError, match="same shape"):
        E.cosine_similarity(a, b[:1])


def test_unique_sentences_encoded_once() -> None:
    model = HashingEmbedder()
    E.evaluate_pairs(model, [*PAIRS, PAIRS[0]], instruction=None, batch_size=100)
    encoded = [t for texts, _, _ in model.calls for t in texts]
    assert len(encoded) == len(set(encoded)) == 9  # PAIRS has 10 texts, one of them twice


# ---------------------------------------------------------------------------------------------------
# evaluate(): instructions, errors
# ---------------------------------------------------------------------------------------------------


def test_evaluate_passes_default_instruction_as_query(toy_task: str) -> None:
    model = HashingEmbedder()
    results = E.evaluate(model, tasks=(toy_task,), batch_size=4)
    assert {(instr, ptype) for _, instr, ptype in model.calls} == {("Toy instruction.", "query")}
    row = results["toy"]
    assert row["split"] == "test" and row["num_pairs"] == 5 and row["instruction"] == "Toy instruction."
    assert set(row) == {"spearman", "pearson", "split", "num_pairs", "instruction", "main_score", "type", "metric",
                        "in_domain", "evaluation_time"}
    assert row["main_score"] == row["spearman"] and row["type"] == "sts" and row["in_domain"] is False
    assert row["spearman"] == pytest.approx(E.evaluate_pairs(HashingEmbedder(), PAIRS, None)["spearman"])


@pytest.mark.parametrize("override", ["Find paraphrases.", None])
def test_evaluate_instruction_override(toy_task: str, override: str | None) -> None:
    model = HashingEmbedder()
    results = E.evaluate(model, tasks=toy_task, instructions={"toy": override})
    assert {instr for _, instr, _ in model.calls} == {override}
    assert results["toy"]["instruction"] == override


def test_default_instructions_are_sts_style() -> None:
    assert E.TASKS["sts-b"].instruction == E.TASKS["sick-r"].instruction == STS_INSTRUCTION


def test_unknown_task_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'stsb'.*sts-b, sick-r"):
        E.evaluate(HashingEmbedder(), tasks=("stsb",))
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        E.evaluate(HashingEmbedder(), tasks=("sts-b",), instructions={"nope": "x"})


def test_bad_split_is_a_clear_error_before_encoding() -> None:
    model = HashingEmbedder()
    with pytest.raises(ValueError, match=r"'sick-r' has no split 'dev' \(valid: test\)"):
        E.evaluate(model, tasks=("sts-b", "sick-r"), split="dev")
    with pytest.raises(ValueError, match=r"'sts-b' has no split 'validation'"):
        E.evaluate(model, tasks="sts-b", split="validation")
    assert model.calls == []  # nothing was encoded before the error


def test_load_instructions(tmp_path: Path) -> None:
    path = tmp_path / "instr.json"
    path.write_text(json.dumps({"sts-b": "Find paraphrases.", "SICK-R": None}))
    assert E.load_instructions(path) == {"sts-b": "Find paraphrases.", "sick-r": None}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "invalid JSON at line 1"),
        ('["a"]', "expected a JSON object"),
        ('{"msmarco": "x"}', "unknown task 'msmarco'"),
        ('{"sts-b": 3}', "must be a string or null"),
    ],
)
def test_load_instructions_errors_name_the_file(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        E.load_instructions(path)
    assert str(path) in str(info.value)


def test_load_instructions_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.json"):
        E.load_instructions(tmp_path / "missing.json")


# ---------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------

RESULTS = {
    "minilm": {"sts-b": {"spearman": 82.03, "pearson": 82.7, "split": "test", "num_pairs": 1379,
                         "instruction": STS_INSTRUCTION},
               "sick-r": {"spearman": 77.58, "pearson": 83.9, "split": "test", "num_pairs": 9927,
                          "instruction": None}},
    "other": {"sts-b": {"spearman": 70.0, "pearson": 71.0, "split": "test", "num_pairs": 1379,
                        "instruction": STS_INSTRUCTION}},
}


def test_results_table_has_a_row_per_model() -> None:
    table = E.results_table(RESULTS)
    assert table.row_count == 2
    assert [c.header for c in table.columns] == ["model", "sts-b", "sick-r", "avg"]
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert "79.81" in text  # minilm's average; "other" lacks sick-r so shows no (misleading) average
    assert "82.03" in text and "70.00" in text


def test_write_results_round_trips(tmp_path: Path) -> None:
    path = E.write_results(tmp_path / "out" / "results.json", RESULTS)
    data = json.loads(path.read_text())
    assert data["date"] and [m["model"] for m in data["models"]] == ["minilm", "other"]
    assert data["models"][0]["average_spearman"] == pytest.approx(79.805)
    assert data["models"][1]["average_spearman"] is None
    assert E.read_results(path) == RESULTS
    assert data["environment"]["libraries"]["promptembedder"] and data["environment"]["python"]
    import promptembedder  # the package's version, read from its installed metadata as the results' is

    assert data["promptembedder_version"] == promptembedder.__version__ == metadata.version("promptembedder")


# Calibration against MTEB's published MiniLM scores (STS-B, SICK-R and the other four tasks, one model run) is in
# test_eval_calibration.py.
