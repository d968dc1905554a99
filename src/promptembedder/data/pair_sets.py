"""Readers for the labelled sentence-pair sets of the shared data: Quora duplicates, MultiNLI, SciTail and the
counterfactually augmented SNLI (CAD). Like every reader, a bad row raises `DataError` naming file and line."""

from __future__ import annotations

import csv
from pathlib import Path

from .datasets import DataError, PathLike, _check_text, _root, _text_lines, json_rows
from .task_sets import NLI_LABELS, LabelledPair, NLIPair, _check_split, _header_rows

__all__ = ["load_cad_nli", "load_mnli", "load_quora", "load_scitail"]


def _tab_rows(path, width: int):
    """(line, fields) of a headerless tab-separated file whose quotes are literal text."""
    for number, line in _text_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != width:
            raise DataError(path, number, f"expected {width} tab-separated fields, got {len(fields)}")
        yield number, fields


def _binary_pairs(path: Path, names: tuple[str, str], labels: str) -> list[tuple[str, str, bool]]:
    """Rows `first \\t second \\t 1|0` of `path`, each text checked (named `names`), True where the label is 1;
    `labels` says what 1 and 0 mean in the error for any other label. An empty file is an error."""
    rows = []
    for number, (first, second, label) in _tab_rows(path, 3):
        if label not in ("0", "1"):
            raise DataError(path, number, f"label must be {labels}, got {label!r}")
        rows.append((_check_text(path, number, names[0], first), _check_text(path, number, names[1], second),
                     label == "1"))
    if not rows:
        raise DataError(path, None, "no rows")
    return rows


def load_quora(split: str = "dev", root: PathLike | None = None) -> list[LabelledPair]:
    """Quora question pairs (dev 10,000, test 10,000; half duplicates): `question1 \\t question2 \\t 0|1`."""
    _check_split(split, ("dev", "test"), "quora")
    rows = _binary_pairs(_root(root) / "quora" / f"{split}.tsv", ("question1", "question2"), "0 or 1")
    return [LabelledPair(first, second, int(duplicate)) for first, second, duplicate in rows]


def load_scitail(split: str = "dev", root: PathLike | None = None) -> list[NLIPair]:
    """SciTail (dev 1,304, test 2,126): `premise \\t hypothesis \\t 1|0`, read as entailment / neutral."""
    _check_split(split, ("dev", "test"), "scitail")
    rows = _binary_pairs(_root(root) / "scitail" / f"{split}.tsv", ("premise", "hypothesis"),
                         "1 (entails) or 0 (neutral)")
    return [NLIPair(premise, hypothesis, "entailment" if entails else "neutral")
            for premise, hypothesis, entails in rows]


def load_mnli(split: str = "dev_matched", root: PathLike | None = None) -> list[NLIPair]:
    """MultiNLI dev, matched genres (9,815 pairs): JSON lines with premise, hypothesis, label."""
    _check_split(split, ("dev_matched",), "mnli")
    path = _root(root) / "mnli" / f"{split}.jsonl"
    pairs = []
    for number, row in json_rows(path, ("premise", "hypothesis", "label")):
        if row["label"] not in NLI_LABELS:
            raise DataError(path, number, f"label must be one of {sorted(NLI_LABELS)}, got {row['label']!r}")
        pairs.append(NLIPair(_check_text(path, number, "premise", row["premise"]),
                             _check_text(path, number, "hypothesis", row["hypothesis"]), row["label"]))
    if not pairs:
        raise DataError(path, None, "no rows")
    return pairs


def load_cad_nli(split: str = "train", root: PathLike | None = None) -> list[NLIPair]:
    """Counterfactually augmented SNLI (train 8,330, dev 1,000, test 2,000): originals and their minimal edits that
    flip the label, as pairs (header sentence1, sentence2, gold_label; CSV quoting with tabs)."""
    _check_split(split, ("train", "dev", "test"), "cad_nli")
    path = _root(root) / "cad_nli" / f"{split}.tsv"
    pairs = []
    for number, row in _header_rows(path, "\t", ("sentence1", "sentence2", "gold_label"), csv.QUOTE_MINIMAL):
        if row["gold_label"] not in NLI_LABELS:
            raise DataError(path, number, f"gold_label must be one of {sorted(NLI_LABELS)}, got {row['gold_label']!r}")
        pairs.append(NLIPair(_check_text(path, number, "sentence1", row["sentence1"]),
                             _check_text(path, number, "sentence2", row["sentence2"]), row["gold_label"]))
    if not pairs:
        raise DataError(path, None, "no rows")
    return pairs
