"""Run a model over registered tasks: check everything first, then load, encode and score each task in turn."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..data.datasets import read_instructions_json
from ..models.embedder import Embedder
from .classification import evaluate_classification
from .clustering import evaluate_clustering
from .nli_follow import evaluate_instruction_following
from .pair_classification import evaluate_pair_classification
from .retrieval import evaluate_retrieval
from .sts import evaluate_sts
from .tasks import TASKS, TaskSpec, get_task
from .unseen_tasks import evaluate_unseen_tasks
from .unseen_wording import evaluate_unseen_wording

#: Task type -> scorer(model, data, instruction, batch_size, show_progress_bar) -> scores with "main_score".
SCORERS: dict[str, Callable[..., dict[str, Any]]] = {
    "sts": evaluate_sts,
    "retrieval": evaluate_retrieval,
    "classification": evaluate_classification,
    "pair_classification": evaluate_pair_classification,
    "clustering": evaluate_clustering,
    "instruction_following": evaluate_instruction_following,
    "unseen_tasks": evaluate_unseen_tasks,
    "unseen_wording": evaluate_unseen_wording,
}
#: Types that score under their own instructions (several per task): an override is refused before anything runs.
OWN_INSTRUCTIONS = frozenset({"instruction_following", "unseen_tasks", "unseen_wording"})


def evaluate(
    model: Embedder,
    tasks: str | Iterable[str] = ("sts-b", "sick-r"),
    split: str = "test",
    instructions: Mapping[str, str | None] | None = None,
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
    in_domain: Collection[str] = (),
) -> dict[str, dict[str, Any]]:
    """Score ``model`` on each task: ``{task: {main_score, <metric scores>, type, metric, split, instruction, ...}}``.

    ``instructions`` overrides a task's default instruction; a value of None means no instruction. Every task,
    split and override key is checked before anything is encoded, so a typo fails in seconds, not after a run.
    ``in_domain`` names the tasks whose training split the model was trained on; their results say so.
    ``evaluation_time`` is each task's wall seconds (loading, encoding, scoring), as in MTEB's results.
    """
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    if not names:
        raise ValueError("no tasks given")
    specs: list[TaskSpec] = list({spec.name: spec for spec in map(get_task, names)}.values())
    overrides = {get_task(key).name: value for key, value in (instructions or {}).items()}
    for key, value in overrides.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"instruction for {key!r} must be a string or None, got {type(value).__name__}")
    for spec in specs:
        if spec.type in OWN_INSTRUCTIONS and overrides.get(spec.name) is not None:
            raise ValueError(f"task {spec.name!r} scores under its own instructions (the instruction catalogue): "
                             "leave it out of --instruction/--instructions")
        if split not in spec.splits:
            spec.load(split)  # raises the task's own, explanatory error

    results: dict[str, dict[str, Any]] = {}
    progress = tqdm(specs, desc="Tasks", unit="task", disable=not show_progress_bar or len(specs) < 2)
    for spec in progress:
        progress.set_postfix_str(spec.name)
        started = time.perf_counter()
        data = spec.load(split)
        instruction = overrides.get(spec.name, spec.instruction)
        options = {"document_prompt_type": spec.document_prompt_type} if spec.type == "retrieval" else {}
        scores = SCORERS[spec.type](model, data, instruction, batch_size, show_progress_bar, **options)
        results[spec.name] = {**scores, "type": spec.type, "metric": spec.metric, "split": split,
                              "instruction": instruction, "in_domain": spec.name in in_domain,
                              "evaluation_time": round(time.perf_counter() - started, 2)}
    return results


def load_instructions(path: str | os.PathLike[str]) -> dict[str, str | None]:
    """Read ``{task: instruction}`` overrides from JSON; every problem is reported with the file's name."""
    data = read_instructions_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"instructions file {path}: expected a JSON object {{task: instruction}}, "
                         f"got {type(data).__name__}")
    result: dict[str, str | None] = {}
    for key, value in data.items():
        if key.lower() not in TASKS:
            raise ValueError(f"instructions file {path}: unknown task {key!r} (known tasks: {', '.join(TASKS)})")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"instructions file {path}: instruction for {key!r} must be a string or null, "
                             f"got {type(value).__name__}")
        result[TASKS[key.lower()].name] = value
    return result


def in_domain_tasks(model_dir: str | os.PathLike[str]) -> set[str]:
    """Tasks whose training split a saved model was trained on, read from the run's ``training_config.json``.

    The trainer writes that file into the run folder, next to the ``best``/``final`` model folders. Only a saved
    model folder is looked at: a bare backbone (a name such as ``minilm-l6``) was trained on nothing of ours.
    """
    from ..models.config import BASELINE_CONFIG, CONFIG_NAME

    model_dir = Path(model_dir)
    if not ((model_dir / CONFIG_NAME).is_file() or (model_dir / BASELINE_CONFIG).is_file()):
        return set()
    for candidate in (model_dir / "training_config.json", model_dir.parent / "training_config.json"):
        if candidate.is_file():
            try:
                sources = json.loads(candidate.read_text(encoding="utf-8")).get("train_data") or []
            except (json.JSONDecodeError, OSError, AttributeError):
                return set()
            sources = {str(s) for s in sources}
            return {name for name, spec in TASKS.items()
                    if spec.train_source and (spec.train_source in sources or "all" in sources)}
    return set()
