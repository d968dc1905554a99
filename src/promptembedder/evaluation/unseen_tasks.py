"""Unseen tasks: classification tasks no training source reads, each scored under its own instruction.

A static prompt (or a table of them) cannot read a new instruction; P can. Each held-out task (the catalogue's
`unseen_tasks`: ten licl tasks chosen before any run, and 20 Newsgroups) is scored as MTEB scores classification
(`classification.evaluate_classification`: a logistic-regression probe on a few labelled texts per label, several
draws) with its own instruction (licl's `instruction`, 20NG's registry instruction); the main score is the mean.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.instructions import SUITE_PROMPTS, unseen_tasks
from ..data.licl import licl_task, load_licl
from ..data.task_sets import LabelledTexts, load_twentynewsgroups
from ..models.embedder import Embedder
from .classification import ClassificationData, evaluate_classification

#: 20 Newsgroups' test texts scored (seeded draw): the whole 7,532 would dwarf the ten licl tasks' ~100 each.
NEWSGROUPS_TEST = 1000
SEED = 0


@dataclass(frozen=True)
class InstructedTask:
    """A classification task and the wordings it is scored under (the first is its own instruction)."""

    name: str
    data: ClassificationData
    instructions: tuple[str, ...]


def sample(data: LabelledTexts, n: int | None, seed: int = SEED) -> LabelledTexts:
    """`n` texts drawn with `random.Random(seed)`, kept in file order (all of them when n is None or larger)."""
    if n is None or n >= len(data.texts):
        return data
    chosen = sorted(random.Random(seed).sample(range(len(data.texts)), n))
    return LabelledTexts([data.texts[i] for i in chosen], [data.labels[i] for i in chosen])


def licl_instructed(task: str, instructions: Sequence[str] | None = None, test: int | None = None
                    ) -> InstructedTask:
    """A licl task (`licl/<name>` or `<name>`): probe pool = its five training draws, scored on its test split."""
    name = task.removeprefix("licl/")
    data = ClassificationData(load_licl(name, "train"), sample(load_licl(name, "test"), test))
    return InstructedTask(f"licl/{name}", data, tuple(instructions or (licl_task(name).instruction,)))


def newsgroups_instructed(pool_per_label: int | None = None, test: int | None = NEWSGROUPS_TEST) -> InstructedTask:
    """20 Newsgroups subjects as classification: pool from the training posts, a seeded draw of the test posts."""
    train = load_twentynewsgroups("train")
    if pool_per_label is not None:
        rng = random.Random(SEED)
        chosen = sorted(i for label in sorted(set(train.labels))
                        for i in rng.sample([j for j, y in enumerate(train.labels) if y == label], pool_per_label))
        train = LabelledTexts([train.texts[i] for i in chosen], [train.labels[i] for i in chosen])
    instruction = SUITE_PROMPTS["twentynewsgroups"].instruction
    assert instruction is not None
    return InstructedTask("twentynewsgroups", ClassificationData(train, sample(load_twentynewsgroups("test"), test)),
                          (instruction,))


def load_unseen_tasks(split: str = "test") -> list[InstructedTask]:
    """Every task of the catalogue's `unseen_tasks`, at full size (licl test splits, 1,000 20NG test subjects)."""
    return [newsgroups_instructed() if task == "twentynewsgroups" else licl_instructed(task)
            for task in unseen_tasks()]


def evaluate_unseen_tasks(model: Embedder, tasks: Sequence[InstructedTask], instruction: str | None = None,
                          batch_size: int = 64, show_progress_bar: bool | None = None, n_experiments: int = 10,
                          samples_per_label: int = 8) -> dict[str, Any]:
    """Accuracy x100 per task under its own instruction, and their mean (the main score)."""
    if instruction is not None:
        raise ValueError("unseen-tasks scores each task with its own instruction: it takes no instruction override")
    scores = {task.name: evaluate_classification(model, task.data, task.instructions[0], batch_size,
                                                 show_progress_bar, n_experiments, samples_per_label)["accuracy"]
              for task in tasks}
    mean = float(np.mean(list(scores.values())))
    return {"main_score": mean, "accuracy": mean, "per_task": scores, "num_tasks": len(scores),
            "n_experiments": n_experiments, "samples_per_label": samples_per_label}
