"""Shared pytest fixtures."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import make_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Factory ``tiny_model_dir(kind) -> Path``: a saved tiny model + tokenizer, built once per kind."""
    root = tmp_path_factory.mktemp("tiny_models")
    cache: dict[str, Path] = {}

    def _get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = make_tiny_model(kind, root / kind)
        return cache[kind]

    return _get
