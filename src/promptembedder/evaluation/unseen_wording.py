"""Unseen wording: trained tasks scored under an instruction no training run used, against their training wording.

A model that learned the instruction's meaning, not its string, keeps its score when the task is asked for in other
words. Each trained licl task is scored as MTEB scores classification (`classification.evaluate_classification`)
under its first training wording (its licl `instruction`) and under each held-out wording of the catalogue (licl's
`instruction_2` first, then held-out paraphrases). The main score is the mean accuracy under the held-out wordings;
`drop` is the training wording's mean minus it (positive: the new wording costs points).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data.instructions import catalogue
from ..models.embedder import Embedder
from .classification import evaluate_classification
from .unseen_tasks import InstructedTask, licl_instructed


def load_unseen_wording(split: str = "test", tasks: Sequence[str] | None = None, held_out: int | None = None,
                        test: int | None = None) -> list[InstructedTask]:
    """The trained licl tasks (or `tasks`), each with (training wording, held-out wordings[:held_out])."""
    book = catalogue()
    names = list(tasks) if tasks is not None else [t for t in book.train if t.startswith("licl/")]
    result = []
    for name in names:
        key = name if name.startswith("licl/") else f"licl/{name}"
        if key not in book.train:
            raise ValueError(f"unseen-wording: {key!r} is not a trained licl task of the instruction catalogue")
        wordings = (book.train[key][0], *book.held_out[key][:held_out])
        result.append(licl_instructed(key, wordings, test))
    return result


def evaluate_unseen_wording(model: Embedder, tasks: Sequence[InstructedTask], instruction: str | None = None,
                            batch_size: int = 64, show_progress_bar: bool | None = None, n_experiments: int = 10,
                            samples_per_label: int = 8) -> dict[str, Any]:
    """Per task the training wording's and each held-out wording's accuracy x100; means and the drop."""
    if instruction is not None:
        raise ValueError("unseen-wording scores each task under its own wordings: it takes no instruction override")
    per_task: dict[str, dict[str, Any]] = {}
    for task in tasks:
        if len(task.instructions) < 2:
            raise ValueError(f"unseen-wording: {task.name} needs a training wording and at least one held-out one")
        accuracy = [evaluate_classification(model, task.data, wording, batch_size, show_progress_bar, n_experiments,
                                            samples_per_label)["accuracy"] for wording in task.instructions]
        held_out = float(np.mean(accuracy[1:]))
        per_task[task.name] = {"training_wording": accuracy[0], "held_out_wording": held_out,
                               "held_out": dict(zip(task.instructions[1:], accuracy[1:], strict=True)),
                               "drop": accuracy[0] - held_out}
    trained = float(np.mean([t["training_wording"] for t in per_task.values()]))
    held = float(np.mean([t["held_out_wording"] for t in per_task.values()]))
    return {"main_score": held, "accuracy": held, "training_wording": trained, "drop": trained - held,
            "per_task": per_task, "num_tasks": len(per_task), "n_experiments": n_experiments,
            "samples_per_label": samples_per_label}
