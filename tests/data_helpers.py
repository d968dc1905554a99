"""Shared by the data-layer tests (test_data.py, test_data_files.py): write a file, check a DataError's place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptembedder.data.datasets import DataError


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

