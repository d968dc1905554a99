"""Offline STS evaluation that reproduces MTEB's scores: STS Benchmark and SICK-R from the shared data folder.

MTEB needs the Hugging Face Hub to fetch its data sets; this module scores the same pairs the same way
(cosine similarity of the two embeddings, Spearman correlation with gold, x100) without any network, so
training runs and the CLI can report numbers comparable to the MTEB leaderboard.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table
from scipy.stats import pearsonr, spearmanr

from .data import STS_INSTRUCTION, STSPair, load_sick, load_sts
from .embedder import Embedder

__all__ = [
    "TASKS",
    "TaskSpec",
    "cosine_similarity",
    "evaluate",
    "evaluate_pairs",
    "load_instructions",
    "read_results",
    "results_table",
    "write_results",
]

RESULTS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class TaskSpec:
    """An STS-style task: where its pairs come from, which splits exist and the instruction both sides get."""

    name: str
    mteb_name: str
    splits: tuple[str, ...]
    loader: Callable[[str], list[STSPair]]
    instruction: str | None = STS_INSTRUCTION

    def load(self, split: str) -> list[STSPair]:
        """The task's pairs for ``split``; an unknown split is an error, never an empty evaluation."""
        if split not in self.splits:
            raise ValueError(
                f"task {self.name!r} has no split {split!r} (valid: {', '.join(self.splits)})"
                + (" -- MTEB scores all of SICK as its test set" if self.name == "sick-r" else "")
            )
        return self.loader(split)


def _load_sick(split: str) -> list[STSPair]:
    return load_sick()


#: The registry: our name -> how to load it. Both are symmetric STS tasks, scored as MTEB scores them.
TASKS: dict[str, TaskSpec] = {
    "sts-b": TaskSpec("sts-b", "STSBenchmark", ("train", "dev", "test"), load_sts),
    "sick-r": TaskSpec("sick-r", "SICK-R", ("test",), _load_sick),
}


def _task(name: str) -> TaskSpec:
    """Look a task up by name (case-insensitive), with an error that lists what exists."""
    if not isinstance(name, str):
        raise TypeError(f"task names must be strings, got {type(name).__name__}")
    spec = TASKS.get(name.lower())
    if spec is None:
        raise ValueError(f"unknown task {name!r} (known tasks: {', '.join(TASKS)})")
    return spec


# ----------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, d) matrices in float64; explicit so unnormalised embedders score correctly."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two (n, d) matrices of the same shape, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.maximum(norms, np.finfo(np.float64).tiny)


def evaluate_pairs(
    model: Embedder,
    pairs: Sequence[STSPair],
    instruction: str | None = STS_INSTRUCTION,
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
) -> dict[str, float]:
    """Spearman and Pearson (x100) of cosine similarity against gold for any list of pairs.

    Each distinct sentence is embedded once (STS-B and SICK repeat many), with the same instruction and
    prompt_type "query" on both sides since STS is symmetric.
    """
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 pairs to compute a correlation, got {len(pairs)}")
    unique = list(dict.fromkeys(s for p in pairs for s in (p.sentence1, p.sentence2)))
    index = {sentence: i for i, sentence in enumerate(unique)}
    embeddings = model.encode(
        unique, instruction=instruction, batch_size=batch_size, show_progress_bar=show_progress_bar,
        convert_to_numpy=True, prompt_type="query",
    )
    left = embeddings[[index[p.sentence1] for p in pairs]]
    right = embeddings[[index[p.sentence2] for p in pairs]]
    predicted = cosine_similarity(left, right)
    gold = np.array([p.score for p in pairs], dtype=np.float64)
    return {
        "spearman": float(spearmanr(gold, predicted)[0]) * 100,
        "pearson": float(pearsonr(gold, predicted)[0]) * 100,
    }


def evaluate(
    model: Embedder,
    tasks: str | Iterable[str] = ("sts-b", "sick-r"),
    split: str = "test",
    instructions: Mapping[str, str | None] | None = None,
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
) -> dict[str, dict[str, Any]]:
    """Score ``model`` on each task; returns ``{task: {spearman, pearson, split, num_pairs, instruction}}``.

    ``instructions`` overrides a task's default instruction; a value of None means no instruction. Every task,
    split and override key is checked before anything is encoded, so a typo fails in seconds, not after a run.
    """
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    if not names:
        raise ValueError("no tasks given")
    specs = list({spec.name: spec for spec in map(_task, names)}.values())
    overrides = {_task(key).name: value for key, value in (instructions or {}).items()}
    for key, value in overrides.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"instruction for {key!r} must be a string or None, got {type(value).__name__}")
    for spec in specs:
        if split not in spec.splits:
            spec.load(split)  # raises the task's own, explanatory error

    results: dict[str, dict[str, Any]] = {}
    for spec in specs:
        pairs = spec.load(split)
        instruction = overrides.get(spec.name, spec.instruction)
        scores = evaluate_pairs(model, pairs, instruction, batch_size, show_progress_bar)
        results[spec.name] = {**scores, "split": split, "num_pairs": len(pairs), "instruction": instruction}
    return results


def load_instructions(path: str | os.PathLike[str]) -> dict[str, str | None]:
    """Read ``{task: instruction}`` overrides from JSON; every problem is reported with the file's name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"instructions file {path} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"instructions file {path}: cannot read it ({err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"instructions file {path}: invalid JSON at line {err.lineno}, column {err.colno}: "
                         f"{err.msg}") from None
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


# ----------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------


def _task_columns(results_by_model: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Tasks in first-seen order, so the table and JSON keep the order the runs were made in."""
    return list(dict.fromkeys(task for results in results_by_model.values() for task in results))


def _average(results: Mapping[str, Any], tasks: Sequence[str]) -> float | None:
    """Mean Spearman over ``tasks``, or None when one is missing: a partial average would mislead."""
    if not tasks or any(task not in results for task in tasks):
        return None
    return float(np.mean([results[task]["spearman"] for task in tasks]))


def results_table(results_by_model: Mapping[str, Mapping[str, Any]], title: str | None = "STS (Spearman x100)"
                  ) -> Table:
    """A rich table: one row per model, one Spearman column per task, and the average."""
    tasks = _task_columns(results_by_model)
    table = Table(title=title)
    table.add_column("model", style="bold")
    for task in tasks:
        table.add_column(task, justify="right")
    table.add_column("avg", justify="right", style="bold")
    for model, results in results_by_model.items():
        cells = [f"{results[t]['spearman']:.2f}" if t in results else "-" for t in tasks]
        average = _average(results, tasks)
        table.add_row(model, *cells, "-" if average is None else f"{average:.2f}")
    return table


def _jsonable(value: Any) -> Any:
    """numpy scalars -> Python; NaN -> None so the file stays strict JSON that any tool can read."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(path: str | os.PathLike[str], results_by_model: Mapping[str, Mapping[str, Any]]) -> Path:
    """Save results as JSON with the date and each model's name, scores and average; returns the path."""
    from . import __version__

    tasks = _task_columns(results_by_model)
    payload = {
        "format_version": RESULTS_FORMAT_VERSION,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "promptembedder_version": __version__,
        "models": [
            {"model": name, "scores": results, "average_spearman": _average(results, tasks)}
            for name, results in results_by_model.items()
        ],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def read_results(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Load what :func:`write_results` wrote back into ``{model: {task: scores}}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {entry["model"]: entry["scores"] for entry in data["models"]}
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"results file {path}: not a promptembedder results file ({err!r})") from None
