"""Readers of the retrieval, classification, pair, clustering and e-SNLI sets: shapes, and errors naming file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptembedder.data.datasets import DataError, data_dir
from promptembedder.data.task_sets import (
    load_banking77,
    load_esnli_triplets,
    load_mrpc,
    load_scifact,
    load_twentynewsgroups,
)


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def scifact(root: Path, qrels: str = "query-id\tcorpus-id\tscore\n1\t10\t1\n") -> None:
    write(root, "scifact/corpus.jsonl", json.dumps({"_id": "10", "title": " A title ", "text": "Some text."}) + "\n"
          + json.dumps({"_id": "11", "title": "", "text": "Other."}) + "\n")
    write(root, "scifact/queries.jsonl", json.dumps({"_id": "1", "text": "a claim"}) + "\n"
          + json.dumps({"_id": "2", "text": "an unjudged claim"}) + "\n")
    write(root, "scifact/qrels/test.tsv", qrels)


def test_scifact_reads_beir_layout(tmp_path: Path) -> None:
    scifact(tmp_path)
    data = load_scifact("test", tmp_path)
    assert data.corpus == {"10": "A title  Some text.", "11": "Other."}  # title + " " + text, outer spaces stripped
    assert data.queries == {"1": "a claim"} and data.qrels == {"1": {"10": 1}}


@pytest.mark.parametrize(("qrels", "message"), [
    ("query-id\tcorpus-id\tscore\n1\t99\t1\n", r"qrels/test.tsv:2: corpus-id '99' is not in corpus.jsonl"),
    ("query-id\tcorpus-id\tscore\n1\t10\tx\n", r"test.tsv:2: score 'x' is not an integer"),
    ("query-id\tcorpus-id\n1\t10\n", r"test.tsv:1: header lacks columns \['score'\]"),
    ("query-id\tcorpus-id\tscore\n1\t10\t1\n7\t10\t1\n", r"test.tsv: query ids \['7'\] are not in queries.jsonl"),
    ("query-id\tcorpus-id\tscore\n1\t10\n", r"test.tsv:2: expected 3 fields, got 2"),
])
def test_scifact_errors_name_file_and_line(tmp_path: Path, qrels: str, message: str) -> None:
    scifact(tmp_path, qrels)
    with pytest.raises(DataError, match=message):
        load_scifact("test", tmp_path)


def test_scifact_bad_json_line(tmp_path: Path) -> None:
    scifact(tmp_path)
    path = tmp_path / "scifact/corpus.jsonl"
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(DataError, match=r"corpus.jsonl:3: malformed JSON"):
        load_scifact("test", tmp_path)


def test_banking77_multiline_quoted_rows_keep_line_numbers(tmp_path: Path) -> None:
    write(tmp_path, "banking77/test.csv", 'text,category\n"two\nlines, quoted",card_arrival\nok,card_lost\n')
    data = load_banking77("test", tmp_path)
    assert data.texts == ["two\nlines, quoted", "ok"] and data.labels == ["card_arrival", "card_lost"]
    write(tmp_path, "banking77/test.csv", 'text,category\n"two\nlines",card_arrival\nbad,row,extra\n')
    with pytest.raises(DataError, match=r"test.csv:4: expected 2 fields, got 3"):
        load_banking77("test", tmp_path)
    write(tmp_path, "banking77/test.csv", "text,category\n ,card_arrival\n")
    with pytest.raises(DataError, match=r"test.csv:2: 'text' is empty"):
        load_banking77("test", tmp_path)


def test_mrpc_quotes_are_text_and_labels_checked(tmp_path: Path) -> None:
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    write(tmp_path, "mrpc/test.tsv", header + '1\t1\t2\t"Quoted" start\tplain\n0\t3\t4\ta\tb\n')
    pairs = load_mrpc("test", tmp_path)
    assert pairs[0].sentence1 == '"Quoted" start' and [p.label for p in pairs] == [1, 0]
    write(tmp_path, "mrpc/test.tsv", header + "1\t1\t2\ta\tb\nyes\t3\t4\ta\tb\n")
    with pytest.raises(DataError, match=r"mrpc/test.tsv:3: Quality must be 0 or 1, got 'yes'"):
        load_mrpc("test", tmp_path)


def test_twentynewsgroups_and_missing_file(tmp_path: Path) -> None:
    write(tmp_path, "twentynewsgroups/test.tsv", "label\tdoc_id\tsubject\nsci.space\t1\tRe: orbits\n")
    assert load_twentynewsgroups("test", tmp_path).texts == ["Re: orbits"]
    with pytest.raises(FileNotFoundError, match=r"twentynewsgroups/train.tsv not found"):
        load_twentynewsgroups("train", tmp_path)
    with pytest.raises(ValueError, match=r"twentynewsgroups has no split 'dev'"):
        load_twentynewsgroups("dev", tmp_path)


def test_esnli_triplets_and_bad_label(tmp_path: Path) -> None:
    rows = ("idx,gold_label,Sentence1,Sentence2\n0,entailment,\"A man, outside.\",A man.\n"
            "1,contradiction,\"A man, outside.\",A woman.\n2,neutral,\"A man, outside.\",A tall man.\n"
            "3,entailment,Lonely premise.,Still lonely.\n")
    write(tmp_path, "esnli/esnli_dev.csv", rows)
    examples = load_esnli_triplets(("dev",), "Instr.", tmp_path)
    assert [(e.query, e.positive, e.negatives, e.instruction) for e in examples] == [
        ("A man, outside.", "A man.", ("A woman.",), "Instr.")]
    write(tmp_path, "esnli/esnli_dev.csv", rows + "4,maybe,x,y\n")
    with pytest.raises(DataError, match=r"esnli_dev.csv:6: unknown gold_label 'maybe'"):
        load_esnli_triplets(("dev",), root=tmp_path)


def test_real_files_have_the_documented_sizes() -> None:
    try:
        data_dir()
    except FileNotFoundError:
        pytest.skip("shared data directory not found")
    test = load_scifact("test")
    assert (len(test.queries), len(test.corpus), sum(map(len, test.qrels.values()))) == (300, 5183, 339)
    assert len(load_scifact("train").queries) == 709 and len(load_scifact("dev").queries) == 100  # 809 split
    assert len(load_banking77("train").texts) == 10003 and len(set(load_banking77("test").labels)) == 77
    assert sum(p.label for p in load_mrpc("test")) == 1147
    assert len(load_twentynewsgroups("test").texts) == 7532
