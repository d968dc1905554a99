"""Shared by the issue-16 tests (test_reliability.py, test_reliability_errors.py): tiny runs and their data."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from promptembedder.data.datasets import TrainExample
from promptembedder.training import Trainer, TrainingConfig

runner = CliRunner()
PAIRS = [{"query": f"a man is eating food number {i}", "positive": f"a man eats a meal {i}",
          "negative": f"a woman is riding a horse {i}"} for i in range(8)]
EXAMPLES = [TrainExample(p["query"], p["positive"], (p["negative"],), "Find a paraphrase.") for p in PAIRS]


def config(models, out: Path, **overrides) -> TrainingConfig:
    """A tiny run: 2 steps of 4, no dev evaluation, a checkpoint only at the end."""
    values = dict(prompting_model=models[0], embedding_model=models[1], output_dir=str(out), device="cpu",
                  max_steps=2, batch_size=4, save_steps=1000, logging_steps=1, do_eval=False,
                  show_progress_bar=False, learning_rate=1e-3, seed=0)
    return TrainingConfig(**{**values, **overrides})


def run(models, out: Path, **overrides):
    trainer = Trainer(config(models, out, **overrides), examples=EXAMPLES)
    return trainer, trainer.train()


def text(result) -> str:
    return result.output.replace("\n", " ")


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
