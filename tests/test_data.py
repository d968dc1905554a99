"""Tests for the data layer: real-data row counts and pinned values, named-column readers, and bad input."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import pytest

from promptembedder.data import datasets as D
from promptembedder.data.datasets import DataError, DataWarning, STSPair, TrainExample
from promptembedder.data.files import load_examples


@pytest.fixture(scope="module")
def real_root() -> Path:
    try:
        return D.data_dir()
    except FileNotFoundError:
        pytest.skip("shared data directory not found (set PROMPTEMBEDDER_DATA)")


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def _jsonl(path: Path, rows: list[object]) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


def _assert_error(exc_info: pytest.ExceptionInfo[DataError], path: Path, line: int | None) -> None:
    err = exc_info.value
    assert path.name in str(err)
    assert err.line == line
    if line is not None:
        assert f"{path.name}:{line}: " in str(err)


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


# ------------------------------------------------------------------------------------------------------
# load_examples: valid input
# ------------------------------------------------------------------------------------------------------


def test_jsonl_named_columns_and_negatives(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "train.jsonl",
        [
            {"query": "q1", "positive": "p1"},
            {"query": "q2", "positive": "p2", "negatives": ["n1", "n2"]},
            {"query": "q3", "positive": "p3", "negative_2": "b", "negative_1": "a", "negative": "z"},
        ],
    )
    got = load_examples(path, instruction="Do it.")
    assert got == [
        TrainExample("q1", "p1", (), "Do it."),
        TrainExample("q2", "p2", ("n1", "n2"), "Do it."),
        TrainExample("q3", "p3", ("z", "a", "b"), "Do it."),
    ]


def test_jsonl_custom_columns(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "train.json",
        [{"anchor": "a", "pos": "p", "hard": ["h1", "h2"], "negative": "ignored", "other": 1}],
    )
    got = load_examples(path, query_col="anchor", positive_col="pos", negative_cols=["hard"])
    assert got == [TrainExample("a", "p", ("h1", "h2"))]


def test_csv_named_columns_quoting_and_negatives(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "train.csv",
        "\ufeffpositive,query,negative_1,negative_2\r\n"
        '"p, with comma","q ""quoted""",n1,n2\r\n'
        '"multi\nline",q2,n3,n4\r\n',
    )
    got = load_examples(path)
    assert got == [
        TrainExample('q "quoted"', "p, with comma", ("n1", "n2")),
        TrainExample("q2", "multi\nline", ("n3", "n4")),
    ]


def test_tsv_named_columns_literal_quotes(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.tsv", 'q\tp\tneg\n"hi" there\tp1\tn1\n\nq2\tp2\tn2\n')
    got = load_examples(path, query_col="q", positive_col="p", negative_cols=("neg",))
    assert got == [TrainExample('"hi" there', "p1", ("n1",)), TrainExample("q2", "p2", ("n2",))]


def test_train_example_coerces_negatives_to_tuple() -> None:
    example = TrainExample("q", "p", ["n"])  # type: ignore[arg-type]
    assert example.negatives == ("n",)
    assert hash(example) == hash(TrainExample("q", "p", ("n",)))


# ------------------------------------------------------------------------------------------------------
# load_examples: bad input
# ------------------------------------------------------------------------------------------------------

_GOOD = '{"query": "q", "positive": "p"}'


@pytest.mark.parametrize(
    ("name", "content", "line", "reason"),
    [
        ("malformed.jsonl", f'{_GOOD}\n{_GOOD}\n{{"query": "q", "positive": \n', 3, "malformed JSON"),
        ("missing.jsonl", f'{_GOOD}\n{{"query": "q"}}\n', 2, "missing column 'positive'"),
        ("empty_text.jsonl", f'{_GOOD}\n{_GOOD}\n{_GOOD}\n{{"query": "  ", "positive": "p"}}\n', 4, "empty"),
        ("nonstring.jsonl", f'{_GOOD}\n{{"query": 5, "positive": "p"}}\n', 2, "must be a string"),
        ("null.jsonl", f'{{"query": "q", "positive": null}}\n{_GOOD}\n', 1, "must be a string"),
        ("neg_list.jsonl", f'{_GOOD}\n{{"query": "q", "positive": "p", "negatives": "n"}}\n', 2, "list"),
        (
            "neg_item.jsonl",
            f'{_GOOD}\n{{"query": "q", "positive": "p", "negatives": ["n", 1]}}\n',
            2,
            "string",
        ),
        ("array_line.jsonl", f'{_GOOD}\n["q", "p"]\n', 2, "JSON object"),
        ("empty_text.csv", "query,positive\nq,p\nq,\n", 3, "empty"),
        ("fields.csv", "query,positive\nq,p\nq,p,extra\n", 3, "expected 2 fields"),
        ("badquote.csv", 'query,positive\nq,p\n"q"x,p\n', 3, "malformed CSV"),
        ("missing_col.tsv", "query\tpos\nq\tp\n", 2, "missing column 'positive'"),
        ("blank.tsv", "query\tpositive\nq\tp\nq\t \n", 3, "empty"),
    ],
)
def test_bad_input_raises_with_line(tmp_path: Path, name: str, content: str, line: int, reason: str) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(DataError, match=reason) as exc_info:
        load_examples(path)
    _assert_error(exc_info, path, line)


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("bad.jsonl", b'{"query": "q", "positive": "p"}\n{"query": "q\xe9", "positive": "p"}\n', 2),
        ("bad.csv", b"query,positive\nq,p\nq,p\nq,\xff\xfe\n", 4),
        ("bad.tsv", b"query\tpositive\nq\tp\n\x80\tp\n", 3),
    ],
)
def test_non_utf8_byte_raises_with_line(tmp_path: Path, name: str, content: bytes, line: int) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(DataError, match="UTF-8") as exc_info:
        load_examples(path)
    _assert_error(exc_info, path, line)


def test_csv_line_numbers_follow_multiline_fields(tmp_path: Path) -> None:
    path = _write(tmp_path / "multi.csv", b'query,positive\n"a\nb\nc",p\nq,\n')
    with pytest.raises(DataError, match="empty") as exc_info:
        load_examples(path)
    _assert_error(exc_info, path, 5)
    path = _write(tmp_path / "multi_bad.csv", b'query,positive\n"a\nb\nc",\xff\nq,p\n')
    with pytest.raises(DataError, match="UTF-8") as exc_info:
        load_examples(path)
    _assert_error(exc_info, path, 4)
    path = _write(tmp_path / "unterminated.csv", b'query,positive\nq,p\n"open,p\nq,p\n')
    with pytest.raises(DataError, match="malformed CSV") as exc_info:
        load_examples(path)
    _assert_error(exc_info, path, 3)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.jsonl", ""),
        ("blank.jsonl", "\n  \n"),
        ("empty.csv", ""),
        ("header_only.csv", "query,positive\n"),
    ],
)
def test_empty_file_raises(tmp_path: Path, name: str, content: str) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(DataError, match="no examples") as exc_info:
        load_examples(path)
    _assert_error(exc_info, path, None)


def test_unknown_extension(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.parquet", "x")
    with pytest.raises(DataError, match="unknown file extension") as exc_info:
        load_examples(path)
    _assert_error(exc_info, path, None)


def test_header_problems_are_fatal_even_when_skipping(tmp_path: Path) -> None:
    path = _write(tmp_path / "dup.csv", "query,query,positive\nq,q,p\n")
    with pytest.raises(DataError, match="duplicate") as exc_info:
        load_examples(path, skip_invalid=True)
    _assert_error(exc_info, path, 1)
    path = _write(tmp_path / "badheader.csv", b"qu\xffery,positive\nq,p\n")
    with pytest.raises(DataError, match="UTF-8") as exc_info:
        load_examples(path, skip_invalid=True)
    _assert_error(exc_info, path, 1)


def test_explicit_negative_column_missing(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "query,positive\nq,p\n")
    with pytest.raises(DataError, match="missing column 'neg'") as exc_info:
        load_examples(path, negative_cols=["neg"])
    _assert_error(exc_info, path, 2)


def test_data_error_is_value_error_and_picklable(tmp_path: Path) -> None:
    err = DataError(tmp_path / "f.jsonl", 7, "bad")
    assert isinstance(err, ValueError)
    assert str(err) == f"{tmp_path / 'f.jsonl'}:7: bad"
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.line, again.reason, str(again)) == (err.path, 7, "bad", str(err))


# ------------------------------------------------------------------------------------------------------
# skip_invalid
# ------------------------------------------------------------------------------------------------------


def test_skip_invalid_jsonl_warns_with_count(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "mixed.jsonl",
        b'{"query": "q1", "positive": "p1"}\n'
        b"{not json\n"
        b'{"query": "q2"}\n'
        b'{"query": "\xff", "positive": "p"}\n'
        b'{"query": "q3", "positive": "p3"}\n',
    )
    with pytest.warns(DataWarning, match=r"skipped 3 invalid line\(s\)") as record:
        got = load_examples(path, skip_invalid=True)
    assert [e.query for e in got] == ["q1", "q3"]
    message = str(record[0].message)
    assert path.name in message and "line 2" in message and "line 3" in message and "line 4" in message


def test_skip_invalid_csv_warns_with_count(tmp_path: Path) -> None:
    path = _write(tmp_path / "mixed.csv", b"query,positive\nq1,p1\nq2,\n\xff,p\nq3,p3,x\nq4,p4\n")
    with pytest.warns(DataWarning, match=r"skipped 3 invalid line\(s\)"):
        got = load_examples(path, skip_invalid=True)
    assert [e.query for e in got] == ["q1", "q4"]


def test_skip_invalid_no_warning_when_clean(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "clean.jsonl", [{"query": "q", "positive": "p"}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_examples(path, skip_invalid=True)) == 1


def test_skip_invalid_all_bad_still_raises(tmp_path: Path) -> None:
    path = _write(tmp_path / "allbad.jsonl", '{"query": "q"}\n{oops\n')
    with pytest.warns(DataWarning, match="skipped 2"), pytest.raises(DataError, match="no valid examples"):
        load_examples(path, skip_invalid=True)
