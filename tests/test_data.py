"""The built-in data sets: data_dir, real-data row counts and pinned values, and synthetic STS-B, SICK and SNLI
files (their formats and malformed lines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_helpers import _assert_error, _jsonl, _write

from promptembedder.data import datasets as D
from promptembedder.data.datasets import DataError, STSPair, TrainExample


@pytest.fixture(scope="module")
def real_root() -> Path:
    try:
        return D.data_dir()
    except FileNotFoundError:
        pytest.skip("shared data directory not found (set PROMPTEMBEDDER_DATA)")


# ------------------------------------------------------------------------------------------------------
# data_dir
# ------------------------------------------------------------------------------------------------------


def test_data_dir_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(D.DATA_ENV_VAR, str(tmp_path))
    assert D.data_dir() == tmp_path.resolve()


def test_data_dir_env_var_missing_names_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(D.DATA_ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=D.DATA_ENV_VAR):
        D.data_dir()


# ------------------------------------------------------------------------------------------------------
# Real data
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("split", "count"), [("test", 1379), ("dev", 1500), ("train", 5749)])
def test_sts_row_counts(real_root: Path, split: str, count: int) -> None:
    pairs = D.load_sts(split, root=real_root)
    assert len(pairs) == count
    assert all(0.0 <= p.score <= 5.0 for p in pairs)


def test_sts_pinned_first_row(real_root: Path) -> None:
    first = D.load_sts("test", root=real_root)[0]
    assert first == STSPair("A girl is styling her hair.", "A girl is brushing her hair.", 2.5)


def test_sts_default_root_matches(real_root: Path) -> None:
    assert len(D.load_sts()) == 1379


def test_sts_unknown_split(real_root: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        D.load_sts("validation", root=real_root)


def test_sick_row_count(real_root: Path) -> None:
    pairs = D.load_sick(root=real_root)
    assert len(pairs) == 9927
    assert pairs[0].score == 4.5
    assert pairs[0].sentence1.startswith("A group of kids is playing in a yard")
    assert all(1.0 <= p.score <= 5.0 for p in pairs)


def test_sts_train_pairs(real_root: Path) -> None:
    examples = D.load_sts_train_pairs(root=real_root, instruction=D.STS_INSTRUCTION)
    n_high = sum(p.score >= 4.0 for p in D.load_sts("train", root=real_root))
    assert len(examples) == n_high > 0
    assert all(e.instruction == D.STS_INSTRUCTION and e.negatives == () for e in examples)
    assert len(D.load_sts_train_pairs(min_score=5.0, root=real_root)) < len(examples)


def test_snli_triplets(real_root: Path) -> None:
    triplets = D.load_snli_triplets(root=real_root, instruction=D.NLI_INSTRUCTION)
    assert triplets
    for t in triplets:
        assert len(t.negatives) == 1
        assert t.positive != t.negatives[0]
        assert t.query and t.positive and t.instruction == D.NLI_INSTRUCTION
    assert triplets == D.load_snli_triplets(root=real_root, instruction=D.NLI_INSTRUCTION)  # deterministic
    dev = D.load_snli_triplets(("dev",), root=real_root)
    test = D.load_snli_triplets("test", root=real_root)
    assert 0 < len(dev) < len(triplets) and 0 < len(test) < len(triplets)


# ------------------------------------------------------------------------------------------------------
# Synthetic versions of the built-in formats
# ------------------------------------------------------------------------------------------------------


def test_sts_extra_trailing_fields_and_literal_quotes(tmp_path: Path) -> None:
    (tmp_path / "stsbenchmark").mkdir()
    _write(
        tmp_path / "stsbenchmark" / "sts-test.csv",
        'g\tf\t2016\t0001\t3\tShe said "hi.\tHe said hi.\tsource note A\tsource note B\n'
        "g\tf\t2016\t0002\t4.200\tA dog runs.\tA dog is running.\n",
    )
    pairs = D.load_sts("test", root=tmp_path)
    assert pairs == [
        STSPair('She said "hi.', "He said hi.", 3.0),
        STSPair("A dog runs.", "A dog is running.", 4.2),
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("g\tf\t2016\t0002\t4.0\tonly six fields", "at least 7"),
        ("g\tf\t2016\t0002\tfour\tA.\tB.", "not a number"),
        ("g\tf\t2016\t0002\t7.5\tA.\tB.", "outside"),
        ("g\tf\t2016\t0002\t4.0\t  \tB.", "empty"),
    ],
)
def test_sts_malformed_line(tmp_path: Path, line: str, reason: str) -> None:
    (tmp_path / "stsbenchmark").mkdir()
    path = _write(tmp_path / "stsbenchmark" / "sts-dev.csv", "g\tf\t2016\t0001\t3\tA.\tB.\n" + line + "\n")
    with pytest.raises(DataError, match=reason) as exc_info:
        D.load_sts("dev", root=tmp_path)
    _assert_error(exc_info, path, 2)


def test_sts_non_utf8(tmp_path: Path) -> None:
    (tmp_path / "stsbenchmark").mkdir()
    path = _write(
        tmp_path / "stsbenchmark" / "sts-dev.csv", b"g\tf\t2016\t1\t3\tA.\tB.\ng\tf\t2016\t2\t3\t\xff\tB.\n"
    )
    with pytest.raises(DataError, match="UTF-8") as exc_info:
        D.load_sts("dev", root=tmp_path)
    _assert_error(exc_info, path, 2)


def test_sick_synthetic_and_bad_score(tmp_path: Path) -> None:
    (tmp_path / "sick").mkdir()
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
    _write(tmp_path / "sick" / "SICK.txt", header + "1\tA.\tB.\t3.6\tNEUTRAL")  # no final newline
    assert D.load_sick(root=tmp_path) == [STSPair("A.", "B.", 3.6)]
    path = _write(tmp_path / "sick" / "SICK.txt", header + "1\tA.\tB.\t3.6\tNEUTRAL\n2\tA.\tB.\tx\tNEUTRAL\n")
    with pytest.raises(DataError, match="not a number") as exc_info:
        D.load_sick(root=tmp_path)
    _assert_error(exc_info, path, 3)


def _snli_row(caption: str, premise: str, hypothesis: str, label: str) -> dict[str, str]:
    return {"captionID": caption, "sentence1": premise, "sentence2": hypothesis, "gold_label": label}


def test_snli_grouping_round_robin(tmp_path: Path) -> None:
    (tmp_path / "snli").mkdir()
    rows = [
        _snli_row("c1", "P1", "E1", "entailment"),
        _snli_row("c1", "P1", "N1", "neutral"),
        _snli_row("c1", "P1", "C1", "contradiction"),
        _snli_row("c1", "P1", "E2", "entailment"),
        _snli_row("c1", "P1", "E3", "entailment"),
        _snli_row("c1", "P1", "C2", "contradiction"),
        _snli_row("c1", "P1", "X", "-"),
        _snli_row("c2", "P2", "E4", "entailment"),  # no contradiction: dropped
        _snli_row("c3", "P3", "C3", "contradiction"),  # no entailment: dropped
    ]
    _jsonl(tmp_path / "snli" / "snli_1.0_dev.jsonl", rows)
    got = D.load_snli_triplets(("dev",), root=tmp_path)
    assert got == [
        TrainExample("P1", "E1", ("C1",)),
        TrainExample("P1", "E2", ("C2",)),
        TrainExample("P1", "E3", ("C1",)),
    ]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ('{"captionID": "c", "sentence1": "P"', "malformed JSON"),
        ('{"captionID": "c", "sentence1": "P", "sentence2": "H"}', "gold_label"),
        ('{"captionID": "c", "sentence1": "P", "sentence2": 3, "gold_label": "neutral"}', "string"),
        ('{"captionID": "c", "sentence1": "P", "sentence2": "H", "gold_label": "maybe"}', "gold_label"),
    ],
)
def test_snli_malformed_line(tmp_path: Path, bad: str, reason: str) -> None:
    (tmp_path / "snli").mkdir()
    good = json.dumps(_snli_row("c", "P", "H", "entailment"))
    path = _write(tmp_path / "snli" / "snli_1.0_dev.jsonl", f"{good}\n{good}\n{bad}\n")
    with pytest.raises(DataError, match=reason) as exc_info:
        D.load_snli_triplets(("dev",), root=tmp_path)
    _assert_error(exc_info, path, 3)
