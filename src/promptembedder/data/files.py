"""Training examples from the user's files (JSONL, CSV, TSV): named or auto-detected columns, hard negatives.

As every reader in `data`, it fails loudly: a malformed line raises `DataError` naming the file and the 1-based
line, unless `skip_invalid=True`, which warns with the count of lines skipped.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .datasets import DataError, DataWarning, PathLike, TrainExample, _check_text, _decode, _raw_lines

__all__ = ["load_examples"]

_NEGATIVE_COL_RE = re.compile(r"^negative_(\d+)$")
_JSONL_SUFFIXES = frozenset({".jsonl", ".json", ".ndjson"})
# How many skipped-line reasons a skip_invalid warning quotes, so it stays readable on a very dirty file.
_MAX_REASONS_IN_WARNING = 3


def _negative_sort_key(name: str) -> tuple[int, int]:
    match = _NEGATIVE_COL_RE.match(name)
    return (0, 0) if match is None else (1, int(match.group(1)))


def _auto_negative_names(names: Iterable[str]) -> list[str]:
    """Negative columns used when none are given: `negative`, then `negative_1`, `negative_2`, ..."""
    found = [n for n in names if n == "negative" or _NEGATIVE_COL_RE.match(n)]
    return sorted(found, key=_negative_sort_key)


def _negatives_from_value(path: Path, number: int, name: str, value: Any) -> list[str]:
    """A negative field holds one string, or (JSON only) a list of strings."""
    if isinstance(value, list):
        return [_check_text(path, number, f"{name}[{i}]", v) for i, v in enumerate(value)]
    return [_check_text(path, number, name, value)]


def _example_from_record(
    path: Path,
    number: int,
    record: dict[str, Any],
    query_col: str,
    positive_col: str,
    negative_cols: Sequence[str] | None,
    instruction: str | None,
    document_prompt_type: str = "query",
) -> TrainExample:
    for col in (query_col, positive_col, *(negative_cols or ())):
        if col not in record:
            raise DataError(path, number, f"missing column {col!r}")
    query = _check_text(path, number, query_col, record[query_col])
    positive = _check_text(path, number, positive_col, record[positive_col])
    negatives: list[str] = []
    if negative_cols is not None:
        for col in negative_cols:
            negatives.extend(_negatives_from_value(path, number, col, record[col]))
    else:
        for col in _auto_negative_names(k for k in record if k not in (query_col, positive_col)):
            negatives.extend(_negatives_from_value(path, number, col, record[col]))
        if "negatives" in record and "negatives" not in (query_col, positive_col):
            value = record["negatives"]
            if not isinstance(value, list):
                raise DataError(
                    path, number, f"'negatives' must be a list of strings, got {type(value).__name__}"
                )
            negatives.extend(_negatives_from_value(path, number, "negatives", value))
    return TrainExample(query, positive, tuple(negatives), instruction, document_prompt_type=document_prompt_type)


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """Yield `(line, record)`, or `(line, error)` for a bad line: the caller decides to raise or skip."""
    first = True
    for number, raw in _raw_lines(path):
        try:
            text = _decode(path, number, raw)
        except DataError as exc:
            yield number, exc
            continue
        if not text.strip():
            continue
        if first and text.lstrip().startswith("["):
            raise DataError(path, number, "expected JSON lines (one object per line), found a JSON array")
        first = False
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, DataError(path, number, f"malformed JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(record, dict):
            yield number, DataError(path, number, f"expected a JSON object, got {type(record).__name__}")
            continue
        yield number, record


def _delimited_records(
    path: Path, delimiter: str, skip_invalid: bool
) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """Yield `(line, record)` from CSV (RFC 4180 quoting) or TSV (no quoting: quotes are literal text).

    Header problems raise immediately: without a valid header no line of the file can be read.
    """
    physical: list[int] = []  # physical line number of each line handed to the csv reader
    pending: list[tuple[int, DataError]] = []  # undecodable lines, reported in order instead of parsed

    def lines() -> Iterator[str]:
        for number, raw in _raw_lines(path):
            try:
                text = _decode(path, number, raw)
            except DataError as exc:
                if not skip_invalid:  # raise at once: a bad byte inside a quoted field must not hide
                    raise
                pending.append((number, exc))
                continue
            physical.append(number)
            yield text + "\n"

    if delimiter == "\t":
        reader = csv.reader(lines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(lines(), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    header_line = 0
    consumed = 0
    while True:
        start_index = consumed
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            number = physical[min(start_index, len(physical) - 1)] if physical else 1
            if header is None:
                raise DataError(path, number, f"malformed header: {exc}") from None
            yield number, DataError(path, number, f"malformed CSV: {exc}")
            consumed = reader.line_num
            continue
        consumed = reader.line_num
        while pending:
            number, error = pending.pop(0)
            if header is None:
                raise error
            yield number, error
        number = physical[start_index]
        if not row:
            continue
        if header is None:
            header, header_line = row, number
            if any(not name.strip() for name in header):
                raise DataError(path, number, "header has an empty column name")
            duplicates = sorted({n for n in header if header.count(n) > 1})
            if duplicates:
                raise DataError(path, number, f"header has duplicate columns {duplicates}")
            continue
        if len(row) != len(header):
            yield (
                number,
                DataError(
                    path,
                    number,
                    f"expected {len(header)} fields (header on line {header_line}), got {len(row)}",
                ),
            )
            continue
        yield number, dict(zip(header, row, strict=True))
    while pending:
        number, error = pending.pop(0)
        if header is None:
            raise error
        yield number, error


def load_examples(
    path: PathLike,
    query_col: str = "query",
    positive_col: str = "positive",
    negative_cols: Sequence[str] | None = None,
    instruction: str | None = None,
    skip_invalid: bool = False,
    document_prompt_type: str = "query",
) -> list[TrainExample]:
    """Read training examples from JSON lines (.jsonl/.json/.ndjson), CSV or TSV with named columns.

    `negative_cols=None` picks up `negative`, `negative_1`, `negative_2`, ... and (JSON lines) a
    `negatives` list. Any bad line raises `DataError` with its line number; `skip_invalid=True`
    drops bad lines instead and warns (`DataWarning`) with how many were dropped. A file yielding no
    example always raises, since an empty training set is never what the caller meant.
    `document_prompt_type="document"` reads the positives and negatives as retrieval's documents (without the
    instruction), as evaluation reads a retrieval task's; "query" (default) behind it, as a symmetric task's.
    """
    path = Path(path)
    if isinstance(negative_cols, str):
        negative_cols = (negative_cols,)
    if instruction is not None and not instruction.strip():
        raise ValueError("instruction must be None or a non-blank string")
    if document_prompt_type not in ("query", "document"):
        raise ValueError(f"{path}: document_prompt_type must be 'query' or 'document', got {document_prompt_type!r}")
    suffix = path.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        records = _jsonl_records(path)
    elif suffix == ".csv":
        records = _delimited_records(path, ",", skip_invalid)
    elif suffix == ".tsv":
        records = _delimited_records(path, "\t", skip_invalid)
    else:
        raise DataError(
            path, None, f"unknown file extension {path.suffix!r} (expected .jsonl, .json, .csv, .tsv)"
        )

    examples: list[TrainExample] = []
    skipped: list[DataError] = []
    for number, record in records:
        try:
            if isinstance(record, DataError):
                raise record
            example = _example_from_record(
                path, number, record, query_col, positive_col, negative_cols, instruction, document_prompt_type
            )
            examples.append(example)
        except DataError as exc:
            if not skip_invalid:
                raise
            skipped.append(exc)
    if skipped:
        reasons = "; ".join(f"line {e.line}: {e.reason}" for e in skipped[:_MAX_REASONS_IN_WARNING])
        more = ", ..." if len(skipped) > _MAX_REASONS_IN_WARNING else ""
        warnings.warn(
            f"{path}: skipped {len(skipped)} invalid line(s) ({reasons}{more})", DataWarning, stacklevel=2
        )
    if not examples:
        reason = f"no valid examples ({len(skipped)} invalid line(s) skipped)" if skipped else "no examples"
        raise DataError(path, None, reason)
    return examples
