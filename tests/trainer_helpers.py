"""Shared by the trainer tests (test_trainer*.py, test_training_config.py): tiny data, a tiny run's config, its log.

The fixtures these files use (`one_thread`, `dev_pairs`) are in conftest.py.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import torch
from tiny_models import CORPUS

from promptembedder.data.datasets import STSPair, TrainExample, data_dir
from promptembedder.training import TrainingConfig

TinyDir = Callable[[str], Path]

INSTRUCTION = "Retrieve semantically similar text."
OTHER_INSTRUCTION = "Find a question that is a duplicate of the given question."

#: Small fixed paraphrase-like pairs (query, positive).
PARAPHRASES: list[tuple[str, str]] = [
    ("A man is eating food.", "A man eats a meal."),
    ("A woman is riding a white horse.", "A lady rides a horse."),
    ("A monkey is playing drums.", "A gorilla plays the drums."),
    ("The children are listening to music in the park.", "Kids hear songs in the park."),
    ("It was raining heavily at the station.", "Heavy rain fell at the station."),
    ("The stock market fell sharply.", "Stocks dropped a lot."),
    ("A person is slicing an onion with a knife.", "Someone cuts an onion."),
    ("The dog is chasing a ball across the field.", "A dog runs after a ball."),
]


def paraphrase_examples() -> list[TrainExample]:
    return [TrainExample(q, p, instruction=INSTRUCTION) for q, p in PARAPHRASES]


def mixed_examples() -> list[TrainExample]:
    """Two instructions (one soft prompt per batch), some hard negatives: 8 + 8 examples."""
    examples = [TrainExample(q, p, (CORPUS[i],), INSTRUCTION) for i, (q, p) in enumerate(PARAPHRASES)]
    for i in range(8):
        words = CORPUS[20 + i].rstrip(".?!:").split()
        half = len(words) // 2
        examples.append(TrainExample(" ".join(words[: half + 1]), " ".join(words[half:]), (), OTHER_INSTRUCTION))
    return examples


#: Stand-in for STS-B dev when the shared data folder is absent, so the tiny tests run anywhere.
SYNTHETIC_DEV = [
    STSPair(q, p, 4.0 + 0.1 * (i % 5)) for i, (q, p) in enumerate(PARAPHRASES)
] + [STSPair(CORPUS[i], CORPUS[i + 23], 0.5 * (i % 4)) for i in range(12)]


def real_data_available() -> bool:
    try:
        root = data_dir()
    except FileNotFoundError:
        return False
    return (root / "stsbenchmark" / "sts-dev.csv").exists() and (root / "snli").is_dir()


def make_config(tmp_path: Path, p: str | Path, e: str | Path, name: str = "run", **overrides) -> TrainingConfig:
    values = dict(
        method="promptembedder",
        prompting_model=str(p),
        embedding_model=str(e),
        output_dir=str(tmp_path / name),
        device="cpu",
        show_progress_bar=False,
        eval_max_pairs=200,
        max_steps=4,
        batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        eval_steps=1000,
        save_steps=1000,
        seed=0,
    )
    values.update(overrides)
    return TrainingConfig(**values)


def read_log(output_dir: str | Path) -> list[dict[str, str]]:
    with open(Path(output_dir) / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
