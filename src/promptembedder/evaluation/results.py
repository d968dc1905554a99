"""Reporting: one rich table per task type, a summary of averages per model, and results JSON."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from .tasks import TASK_TYPES, TYPE_TITLES

RESULTS_FORMAT_VERSION = 2
IN_DOMAIN_MARK = "*"


def _task_columns(results_by_model: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Tasks in first-seen order, so the table and JSON keep the order the runs were made in."""
    return list(dict.fromkeys(task for results in results_by_model.values() for task in results))


def _type(result: Mapping[str, Any]) -> str:
    return result.get("type", "sts")  # results written before task types existed are STS


def _main(result: Mapping[str, Any]) -> float:
    return result["main_score"] if "main_score" in result else result["spearman"]


def _average(results: Mapping[str, Any], tasks: Sequence[str]) -> float | None:
    """Mean main score over ``tasks``, or None when one is missing: a partial average would mislead."""
    if not tasks or any(task not in results for task in tasks):
        return None
    return float(np.mean([_main(results[task]) for task in tasks]))


def _tasks_by_type(results_by_model: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    by_type: dict[str, list[str]] = {}
    for task in _task_columns(results_by_model):
        result = next(r[task] for r in results_by_model.values() if task in r)
        by_type.setdefault(_type(result), []).append(task)
    return dict(sorted(by_type.items(), key=lambda item: list(TASK_TYPES).index(item[0])))


def results_table(results_by_model: Mapping[str, Mapping[str, Any]], title: str | None = None) -> Table:
    """A rich table: one row per model, one main-score column per task (``*`` = in-domain), and the average."""
    tasks = _task_columns(results_by_model)
    if title is None:
        types = set(_tasks_by_type(results_by_model))
        title = TYPE_TITLES[types.pop()] if len(types) == 1 else "Main scores (x100)"
    table = Table(title=title)
    table.add_column("model", style="bold")
    for task in tasks:
        table.add_column(task, justify="right")
    table.add_column("avg", justify="right", style="bold")
    marked = False
    for model, results in results_by_model.items():
        cells = []
        for task in tasks:
            if task not in results:
                cells.append("-")
                continue
            mark = IN_DOMAIN_MARK if results[task].get("in_domain") else ""
            marked = marked or bool(mark)
            cells.append(f"{_main(results[task]):.2f}{mark}")
        average = _average(results, tasks)
        table.add_row(model, *cells, "-" if average is None else f"{average:.2f}")
    if marked:
        table.caption = f"{IN_DOMAIN_MARK} in-domain: the model was trained on this task's training split"
    return table


def averages(results: Mapping[str, Any], tasks_by_type: Mapping[str, Sequence[str]]) -> dict[str, float | None]:
    """Average main score per task type, and over all tasks (``all``)."""
    out = {task_type: _average(results, tasks) for task_type, tasks in tasks_by_type.items()}
    out["all"] = _average(results, [t for tasks in tasks_by_type.values() for t in tasks])
    return out


def results_tables(results_by_model: Mapping[str, Mapping[str, Any]]) -> list[Table]:
    """One table per task type present, then (with several types) the averages per model."""
    by_type = _tasks_by_type(results_by_model)
    tables = [results_table({m: {t: r[t] for t in tasks if t in r} for m, r in results_by_model.items()},
                            TYPE_TITLES[task_type]) for task_type, tasks in by_type.items()]
    if len(by_type) > 1:
        summary = Table(title="Average per task type (x100)")
        summary.add_column("model", style="bold")
        for task_type in by_type:
            summary.add_column(task_type, justify="right")
        summary.add_column("avg (all tasks)", justify="right", style="bold")
        for model, results in results_by_model.items():
            values = averages(results, by_type)
            summary.add_row(model, *("-" if v is None else f"{v:.2f}" for v in values.values()))
        tables.append(summary)
    return tables


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


def check_writable(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Fail before any scoring if the results file cannot be written, or exists and ``overwrite`` is off."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--output {path} is a directory; give a file name such as {path / 'results.json'}")
    if path.exists() and not overwrite:
        raise ValueError(f"--output {path} exists; choose another file or pass --overwrite")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"--output {path}: no permission to write there")
    try:  # what the write will do (os.access says yes on a read-only mount, in /proc, or to root)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as err:
        raise ValueError(f"--output {path}: cannot write in {parent}: {err.strerror or err}") from None
    return path


def write_results(path: str | os.PathLike[str], results_by_model: Mapping[str, Mapping[str, Any]]) -> Path:
    """Save results as JSON with the date, the environment (library versions, CPU) and each model's scores and
    averages (all tasks, per type, STS)."""
    from ..environment import environment

    by_type = _tasks_by_type(results_by_model)
    env = environment()
    payload = {
        "format_version": RESULTS_FORMAT_VERSION,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "promptembedder_version": env["libraries"].get("promptembedder", "unknown"),  # installed metadata's
        "environment": env,
        "models": [
            {"model": name, "scores": results, "average": averages(results, by_type)["all"],
             "average_by_type": averages(results, by_type),
             "average_spearman": _average(results, by_type.get("sts", []))}
            for name, results in results_by_model.items()
        ],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")  # renamed into place whole: never a truncated file
    try:
        tmp.write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_results(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Load what :func:`write_results` wrote back into ``{model: {task: scores}}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {entry["model"]: entry["scores"] for entry in data["models"]}
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"results file {path}: not a promptembedder results file ({err!r})") from None
