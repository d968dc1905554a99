"""Readers of the many-task sets (Quora, SciTail, MultiNLI, CAD, TREC, SST-2, AG News, e-SNLI pairs): shapes, labels,
and errors naming file:line, on small fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptembedder.data.datasets import DataError
from promptembedder.data.pair_sets import load_cad_nli, load_mnli, load_quora, load_scitail
from promptembedder.data.task_sets import NLIPair, load_agnews, load_esnli_pairs, load_sst2, load_trec


def write(root: Path, relative: str, text: str | bytes) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_quora_and_scitail(tmp_path: Path) -> None:
    write(tmp_path, "quora/dev.tsv", 'How do I "start" ?\tHow to start ?\t1\nA ?\tB ?\t0\n')
    pairs = load_quora("dev", tmp_path)
    assert [(p.sentence1, p.label) for p in pairs] == [('How do I "start" ?', 1), ("A ?", 0)]
    write(tmp_path, "quora/test.tsv", "A ?\tB ?\t2\n")
    with pytest.raises(DataError, match=r"quora/test.tsv:1: label must be 0 or 1"):
        load_quora("test", tmp_path)
    write(tmp_path, "scitail/dev.tsv", "Cells divide.\tCells split.\t1\nRain falls.\tCells split.\t0\n")
    assert [p.label for p in load_scitail("dev", tmp_path)] == ["entailment", "neutral"]
    write(tmp_path, "scitail/test.tsv", "ok\tok\t1\nonly two\tfields\n")
    with pytest.raises(DataError, match=r"scitail/test.tsv:2: expected 3 tab-separated fields, got 2"):
        load_scitail("test", tmp_path)


def test_mnli_and_cad(tmp_path: Path) -> None:
    write(tmp_path, "mnli/dev_matched.jsonl", '{"premise": "P", "hypothesis": "H", "label": "neutral"}\n\n'
                                              '{"premise": "P", "hypothesis": "H", "label": "maybe"}\n')
    with pytest.raises(DataError, match=r"dev_matched.jsonl:3: label must be one of"):
        load_mnli(root=tmp_path)
    write(tmp_path, "mnli/dev_matched.jsonl", '{"premise": "P", "hypothesis": " ", "label": "neutral"}\n')
    with pytest.raises(DataError, match=r"dev_matched.jsonl:1: 'hypothesis' is empty"):
        load_mnli(root=tmp_path)
    write(tmp_path, "cad_nli/dev.tsv", 'sentence1\tsentence2\tgold_label\n"A ""quoted"" man."\tA man.\tentailment\n'
                                       "A man.\tNo one.\tcontradiction\n")
    assert load_cad_nli("dev", tmp_path) == [NLIPair('A "quoted" man.', "A man.", "entailment"),
                                             NLIPair("A man.", "No one.", "contradiction")]
    write(tmp_path, "cad_nli/train.tsv", "sentence1\tsentence2\tgold_label\nA.\tB.\tyes\n")
    with pytest.raises(DataError, match=r"cad_nli/train.tsv:2: gold_label must be one of"):
        load_cad_nli("train", tmp_path)


def test_trec_is_latin1_with_coarse_labels(tmp_path: Path) -> None:
    write(tmp_path, "trec/train_5500.label", "HUM:ind Who is \xf0 ?\nNUM:date When did it end ?\n".encode("latin-1"))
    data = load_trec("train", tmp_path)
    assert (data.texts, data.labels) == (["Who is \xf0 ?", "When did it end ?"], ["HUM", "NUM"])
    write(tmp_path, "trec/TREC_10.label", "HUM:ind Who ?\nWhat is this ?\n")
    with pytest.raises(DataError, match=r"TREC_10.label:2: expected 'COARSE:fine question'"):
        load_trec("test", tmp_path)


def test_sst2_and_agnews(tmp_path: Path) -> None:
    write(tmp_path, "sst2/dev.tsv", "a charming journey . \t1\nflat \t0\n")
    data = load_sst2("dev", tmp_path)
    assert (data.texts, data.labels) == (["a charming journey .", "flat"], ["positive", "negative"])
    write(tmp_path, "sst2/test.tsv", "fine\t1\nno label here\n")
    with pytest.raises(DataError, match=r"sst2/test.tsv:2: expected 'text<TAB>0\|1'"):
        load_sst2("test", tmp_path)
    write(tmp_path, "agnews/classes.txt", "World\nSports\n")
    write(tmp_path, "agnews/test.csv", '"2","Cup, final","Two\\lines."\n"1","Talks","Peace."\n')
    data = load_agnews("test", tmp_path)
    assert (data.texts, data.labels) == (["Cup, final Two lines.", "Talks Peace."], ["Sports", "World"])
    write(tmp_path, "agnews/test.csv", '"1","Talks","Peace."\n"3","Out of range","x"\n')
    with pytest.raises(DataError, match=r"agnews/test.csv:2: expected class \(1-2\)"):
        load_agnews("test", tmp_path)


def test_esnli_pairs(tmp_path: Path) -> None:
    write(tmp_path, "esnli/esnli_dev.csv", "idx,gold_label,Sentence1,Sentence2\n0,entailment,\"A, B\",C\n"
                                           "1,neutral,A,D\n")
    assert load_esnli_pairs("dev", tmp_path) == [NLIPair("A, B", "C", "entailment"), NLIPair("A", "D", "neutral")]
    with pytest.raises(ValueError, match="esnli has no split 'train'"):
        load_esnli_pairs("train", tmp_path)
