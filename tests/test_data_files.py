"""Training files read by name of column (load_examples: JSONL, CSV, TSV): valid input, bad input that fails with
its file and line, and skip_invalid."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import pytest
from data_helpers import _assert_error, _jsonl, _write

from promptembedder.data.datasets import DataError, DataWarning, TrainExample
from promptembedder.data.files import load_examples

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


def test_retrieval_file_reads_its_documents_without_the_instruction(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "retrieval.jsonl", [{"query": "claim", "positive": "abstract", "negative": "other"}])
    got = load_examples(path, instruction="Find the abstract.", document_prompt_type="document")
    assert got == [TrainExample("claim", "abstract", ("other",), "Find the abstract.", document_prompt_type="document")]
    assert load_examples(path)[0].document_prompt_type == "query"
    with pytest.raises(ValueError, match=r"retrieval.jsonl: document_prompt_type must be 'query' or 'document'"):
        load_examples(path, document_prompt_type="documents")


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
