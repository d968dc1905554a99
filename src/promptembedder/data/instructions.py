"""The instruction catalogue (`instructions.json`, package data): per training task the wordings training draws
from and the wordings kept out of training, and the tasks never trained on; and the evaluation suite's task
instructions (`SUITE_PROMPTS`).

Kept as data so the wordings can be read and reviewed in one place, and so the unseen-wording and unseen-task
evaluations can ask which instructions a run could not have seen. Task names are a source's (`quora`,
`nli-entailment`) or `licl/<task>` for the licl tasks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from .datasets import STS_INSTRUCTION, PathLike

__all__ = ["SUITE_PROMPTS", "Catalogue", "TaskPrompt", "catalogue", "held_out_instructions", "load_catalogue",
           "training_instructions", "unseen_tasks"]

CATALOGUE_FILE = "instructions.json"


@dataclass(frozen=True)
class TaskPrompt:
    """How a task is instructed: its instruction (the query side) and the prompt type of its second side,
    "document" for retrieval's documents (read bare) or "query" for symmetric tasks (both sides instructed)."""

    instruction: str | None
    document_prompt_type: str = "query"


#: The evaluation suite's instructions (E5 / MTEB's), here below everything that reads them: evaluation's
#: `TASKS`, the training sources built from these tasks' training splits and `encode_query(prompt_name=...)`.
SUITE_PROMPTS: Mapping[str, TaskPrompt] = MappingProxyType({
    "sts-b": TaskPrompt(STS_INSTRUCTION),
    "sick-r": TaskPrompt(STS_INSTRUCTION),
    "scifact": TaskPrompt("Given a scientific claim, retrieve documents that support or refute the claim", "document"),
    "banking77": TaskPrompt("Given a online banking query, find the corresponding intents"),
    "mrpc": TaskPrompt("Retrieve sentences that are paraphrases of the given sentence"),
    "twentynewsgroups": TaskPrompt("Identify the topic or theme of the given news articles"),
})


@dataclass(frozen=True)
class Catalogue:
    """`train[task]` / `held_out[task]`: the task's wordings; `unseen` and `not_trained`: tasks never trained on."""

    train: dict[str, tuple[str, ...]]
    held_out: dict[str, tuple[str, ...]]
    unseen: tuple[str, ...]
    not_trained: dict[str, str]

    def _task(self, task: str) -> str:
        if task not in self.train:
            never = " (it is never trained on)" if task in self.unseen or task in self.not_trained else ""
            raise KeyError(f"no instructions for task {task!r}{never}; tasks: {', '.join(self.train)}")
        return task


def _wordings(path: Path, task: str, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{path}: tasks.{task}.{key} must be a non-empty list of instructions, got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{path}: tasks.{task}.{key} repeats an instruction")
    return tuple(value)


def load_catalogue(path: PathLike) -> Catalogue:
    """Read and check a catalogue file: no held-out wording of any task may be a training wording of another."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: invalid JSON ({err.msg}, column {err.colno})") from None
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(tasks, dict) or not tasks:
        raise ValueError(f"{path}: expected an object with a non-empty 'tasks' object")
    train, held_out = {}, {}
    for task, entry in tasks.items():
        if not isinstance(entry, dict) or set(entry) != {"train", "held_out"}:
            raise ValueError(f"{path}: tasks.{task} must be an object with exactly 'train' and 'held_out'")
        train[task] = _wordings(path, task, "train", entry["train"])
        held_out[task] = _wordings(path, task, "held_out", entry["held_out"])
    trained = {w: t for t, words in train.items() for w in words}
    for task, words in held_out.items():
        leaked = [w for w in words if w in trained]
        if leaked:
            raise ValueError(f"{path}: tasks.{task}.held_out {leaked[0]!r} is a training instruction of "
                             f"{trained[leaked[0]]!r}")
    unseen, not_trained = data.get("unseen_tasks", []), data.get("not_trained", {})
    if not isinstance(unseen, list) or not isinstance(not_trained, dict):
        raise ValueError(f"{path}: 'unseen_tasks' must be a list and 'not_trained' an object")
    trained_too = sorted(set(train) & (set(unseen) | set(not_trained)))
    if trained_too:
        raise ValueError(f"{path}: {trained_too} are listed as never trained on, yet have training instructions")
    return Catalogue(train, held_out, tuple(unseen), dict(not_trained))


@cache
def catalogue() -> Catalogue:
    """The package's catalogue, read once."""
    with resources.as_file(resources.files(__package__) / CATALOGUE_FILE) as path:
        return load_catalogue(path)


def training_instructions(task: str) -> tuple[str, ...]:
    """The wordings training draws from for `task`, the task's own first."""
    data = catalogue()
    return data.train[data._task(task)]


def held_out_instructions(task: str) -> tuple[str, ...]:
    """The wordings of `task` that no training run uses (for a licl task, its `instruction_2` first)."""
    data = catalogue()
    return data.held_out[data._task(task)]


def unseen_tasks() -> tuple[str, ...]:
    """The tasks held out of training for the unseen-task evaluation (`licl/<task>` and `twentynewsgroups`)."""
    return catalogue().unseen
