"""Readers for the labelled sentence-pair sets of the shared data: Quora duplicates, MultiNLI, SciTail and the
counterfactually augmented SNLI (CAD). Like every reader, a bad row raises `DataError` naming file and line."""

from __future__ import annotations

import csv
import json

from .datasets import DataError, PathLike, _check_text, _root, _text_lines
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


def load_quora(split: str = "dev", root: PathLike | None = None) -> list[LabelledPair]:
    """Quora question pairs (dev 10,000, test 10,000; half duplicates): `question1 \\t question2 \\t 0|1`."""
    _check_split(split, ("dev", "test"), "quora")
    path = _root(root) / "quora" / f"{split}.tsv"
    pairs = []
    for number, (first, second, label) in _tab_rows(path, 3):
        if label not in ("0", "1"):
            raise DataError(path, number, f"label must be 0 or 1, got {label!r}")
        pairs.append(LabelledPair(_check_text(path, number, "question1", first),
                                  _check_text(path, number, "question2", second), int(label)))
    if not pairs:
        raise DataError(path, None, "no rows")
    return pairs


def load_scitail(split: str = "dev", root: PathLike | None = None) -> list[NLIPair]:
    """SciTail (dev 1,304, test 2,126): `premise \\t hypothesis \\t 1|0`, read as entailment / neutral."""
    _check_split(split, ("dev", "test"), "scitail")
    path = _root(root) / "scitail" / f"{split}.tsv"
    pairs = []
    for number, (premise, hypothesis, label) in _tab_rows(path, 3):
        if label not in ("0", "1"):
            raise DataError(path, number, f"label must be 1 (entails) or 0 (neutral), got {label!r}")
        pairs.append(NLIPair(_check_text(path, number, "premise", premise),
                             _check_text(path, number, "hypothesis", hypothesis),
                             "entailment" if label == "1" else "neutral"))
    if not pairs:
        raise DataError(path, None, "no rows")
    return pairs


def load_mnli(split: str = "dev_matched", root: PathLike | None = None) -> list[NLIPair]:
    """MultiNLI dev, matched genres (9,815 pairs): JSON lines with premise, hypothesis, label."""
    _check_split(split, ("dev_matched",), "mnli")
    path = _root(root) / "mnli" / f"{split}.jsonl"
    pairs = []
    for number, text in _text_lines(path):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(path, number, f"malformed JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(row, dict) or row.get("label") not in NLI_LABELS:
            label = row.get("label") if isinstance(row, dict) else row
            raise DataError(path, number, f"label must be one of {sorted(NLI_LABELS)}, got {label!r}")
        pairs.append(NLIPair(_check_text(path, number, "premise", row.get("premise")),
                             _check_text(path, number, "hypothesis", row.get("hypothesis")), row["label"]))
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
