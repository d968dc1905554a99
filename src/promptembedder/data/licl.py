"""The Lifelong-ICL classification tasks (`licl/` in the shared data): 58 small tasks, each with its label names and
two human-written instructions, read as labelled texts.

A row holds one to three text fields (a sentence; a premise and a hypothesis; a context, question and answer). The
task's `inference_prompt` names them: a single field is embedded as it is, several are joined by the prompt itself
without its last line (the label cue), so `premise: ...\\nhypothesis: ...` is one text. A task has five training
draws of 20 rows per label, which may share rows (`train_0` .. `train_4`, or `train` for all five), and a `test` split.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .datasets import DataError, PathLike, _root, json_rows
from .task_sets import LabelledTexts

__all__ = ["LICL_SPLITS", "LiclTask", "licl_task", "licl_tasks", "load_licl"]

LICL_SPLITS = ("train", "train_0", "train_1", "train_2", "train_3", "train_4", "test")
_FIELD = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class LiclTask:
    """A task's `config.json`: label names (`options`), both instructions, and the text fields its rows carry."""

    name: str
    options: tuple[str, ...]
    instruction: str
    instruction_2: str
    template: str
    fields: tuple[str, ...]

    def render(self, row: dict[str, str]) -> str:
        """The text to embed for a row (its fields as validated by `load_licl`)."""
        if len(self.fields) == 1:
            return row[self.fields[0]]
        return _FIELD.sub(lambda m: row[m.group(1)], self.template).strip()


def _folder(root: PathLike | None) -> Path:
    return _root(root) / "licl"


def licl_tasks(root: PathLike | None = None) -> list[str]:
    """The task names: the folders of `licl/` that hold a config.json, sorted."""
    folder = _folder(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"licl data folder {folder} not found (see ../shared/data/README.md)")
    return sorted(p.parent.name for p in folder.glob("*/config.json"))


def _config_text(config: dict, path: Path, key: str) -> str:
    value = config.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(path, None, f"{key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def licl_task(name: str, root: PathLike | None = None) -> LiclTask:
    """Read and check `licl/<name>/config.json` (only classification tasks are supported)."""
    path = _folder(root) / name / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"licl task {name!r} not found: no {path} (tasks: licl_tasks())")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(path, err.lineno, f"malformed JSON: {err.msg} (column {err.colno})") from None
    if not isinstance(config, dict):
        raise DataError(path, None, f"expected a JSON object, got {type(config).__name__}")
    if config.get("task_type") != "classification":
        raise DataError(path, None, f"task_type {config.get('task_type')!r} is not supported (only 'classification')")
    options = config.get("options")
    if (not isinstance(options, list) or len(options) < 2 or len(set(options)) != len(options)
            or not all(isinstance(o, str) and o.strip() for o in options)):
        raise DataError(path, None, f"'options' must list at least two distinct label names, got {options!r}")
    template = _config_text(config, path, "inference_prompt")
    *body, cue = template.split("\n")
    fields = tuple(dict.fromkeys(_FIELD.findall(template)))
    if not fields or _FIELD.search(cue) or not body:
        raise DataError(path, None, f"'inference_prompt' must name the text fields as {{field}} before a last line "
                                    f"that asks for the label, got {template!r}")
    return LiclTask(name, tuple(options), _config_text(config, path, "instruction"),
                    _config_text(config, path, "instruction_2"), "\n".join(body), fields)


def load_licl(name: str, split: str = "test", root: PathLike | None = None) -> LabelledTexts:
    """A task's rendered texts and label names, in file order; `train` is the five training draws, duplicates
    dropped (a draw or `test` is read as it is). A row missing a field, with no text at all or with a label outside
    the task's options is a DataError."""
    if split not in LICL_SPLITS:
        raise ValueError(f"licl has no split {split!r} (valid: {', '.join(LICL_SPLITS)})")
    task = licl_task(name, root)
    names = [f"train_{i}" for i in range(5)] if split == "train" else [split]
    texts, labels, seen = [], [], set()
    for file in names:
        path = _folder(root) / name / f"{file}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"licl file {path} not found (see ../shared/data/README.md)")
        count = 0
        for number, row in json_rows(path, (*task.fields, "label")):
            count += 1
            if not any(row[field].strip() for field in task.fields):  # one may be empty (a title with no body)
                raise DataError(path, number, f"every text field {list(task.fields)} is empty")
            if row["label"] not in task.options:
                raise DataError(path, number, f"label {row['label']!r} is not among the task's options "
                                              f"{list(task.options)} (config.json)")
            text = task.render(row)
            if split != "train" or (text, row["label"]) not in seen:
                seen.add((text, row["label"]))
                texts.append(text)
                labels.append(row["label"])
        if not count:
            raise DataError(path, None, "no rows")
    return LabelledTexts(texts, labels)
