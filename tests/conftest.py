"""Shared pytest fixtures."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from reliability_helpers import run  # noqa: E402
from tiny_models import make_tiny_model  # noqa: E402
from trainer_helpers import SYNTHETIC_DEV, real_data_available  # noqa: E402

import promptembedder.training.dev_evaluation as dev_evaluation_mod  # noqa: E402

#: The files that take minutes, longest first: run first, so the two workers of scripts/test.sh end together.
SLOW_FILES = ("test_cli.py", "test_trainer.py", "test_distributed.py", "test_eval_calibration.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow files first (a stable sort: the order inside each file stays)."""
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and CI's two cores may be shared (`pytest.mark.usefixtures`).

    Yields the thread count from before, for a test that needs every core back (the real-data training test)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield threads
    torch.set_num_threads(threads)


@pytest.fixture
def dev_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer reads STS-B dev in __init__; without the shared data, give it synthetic pairs (the trainer
    tests: `pytest.mark.usefixtures`)."""
    if not real_data_available():
        monkeypatch.setattr(dev_evaluation_mod, "load_sts", lambda split="test", root=None: list(SYNTHETIC_DEV))


@pytest.fixture
def terminal_ctrl_c():
    """Ctrl-C as in a terminal: a suite started in the background (`nohup ... &`) runs with SIGINT ignored, which
    training rightly keeps ignored, so a test that sends one needs Python's own handler while it runs."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="module")
def models(tiny_model_dir) -> tuple[str, str]:
    """(P, E) of the reliability tests: a tiny Llama steering a tiny BERT."""
    return str(tiny_model_dir("llama")), str(tiny_model_dir("bert"))


@pytest.fixture(scope="module")
def saved(models, tmp_path_factory) -> Path:
    """A finished 2-step run of those models (its final/ is a saved PromptEmbedder)."""
    out = tmp_path_factory.mktemp("saved") / "run"
    run(models, out)
    return out
