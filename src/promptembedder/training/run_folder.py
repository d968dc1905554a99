"""A training run's output folder: one run at a time, never overwritten silently, every saved folder complete.

A run takes an exclusive lock on its folder (filelock; the holder's PID is written beside it). A folder that
already holds a run is refused unless the run resumes it or is told to overwrite it. `checkpoint/`, `best/` and
`final/` are each written to `NAME.tmp`, marked complete by a file written last, and renamed into place, so a
crash or Ctrl-C at any moment leaves a complete folder that `recover` finds again.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from filelock import FileLock, Timeout

from . import distributed as dist_utils
from .resume import compare, saved_config

LOCK_FILE = ".lock"
PID_FILE = ".lock.pid"
COMPLETE_FILE = ".complete"  # written last into a saved folder; holds the step it was saved at
SAVED_FOLDERS = ("checkpoint", "best", "final")
#: What a run writes into its folder; `--overwrite` removes exactly these, nothing else the user put there.
RUN_FILES = (*SAVED_FOLDERS, *(f"{n}.{s}" for n in SAVED_FOLDERS for s in ("tmp", "old")), "log.csv",
             "training_config.json", "train_summary.json", "training_curves.png", "tensorboard", "resumes.jsonl")


class RunFolderError(ValueError):
    """The output folder cannot be used as asked (in use, holds another run, nothing to resume)."""


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(f"{path.name}.{suffix}")


def saved_step(folder: Path) -> int | None:
    """The step a complete saved folder holds; None when it is missing or partial. A `checkpoint/` from before
    completion markers counts as complete (it was only ever renamed into place whole), at step -1."""
    marker = folder / COMPLETE_FILE
    if marker.is_file():
        try:
            return int(json.loads(marker.read_text())["step"])
        except (ValueError, KeyError, TypeError, OSError):
            return None
    if folder.name == "checkpoint" and (folder / "trainer_state.pt").is_file():
        return -1
    if folder.name in ("best", "final") and folder.is_dir():
        return -1
    return None


def write_folder(target: Path, write: Callable[[Path], None], step: int) -> None:
    """Write a folder atomically: `write(tmp)`, then the completion marker, then rename over `target`."""
    tmp, old = _sibling(target, "tmp"), _sibling(target, "old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    (tmp / COMPLETE_FILE).write_text(json.dumps({"step": step}) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def recover(target: Path) -> int | None:
    """Put the newest complete one of `target`, `target.tmp` and `target.old` in place after a crash in
    `write_folder`, and remove the others; returns its step, or None (partial folders are left as they are)."""
    candidates = [(step, path) for path in (target, _sibling(target, "tmp"), _sibling(target, "old"))
                  if (step := saved_step(path)) is not None]
    if not candidates:
        return None
    step, newest = max(candidates, key=lambda c: c[0])  # max keeps the first on ties: target itself
    if newest != target:
        shutil.rmtree(target, ignore_errors=True)
        newest.rename(target)
    for suffix in ("tmp", "old"):
        shutil.rmtree(_sibling(target, suffix), ignore_errors=True)
    return step


class RunFolder:
    """The output folder of one run, held under an exclusive lock from `open` to `close`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock: FileLock | None = None

    def lock(self) -> None:
        """Take the folder's lock, or refuse naming the process that holds it."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(f"--output-dir {self.path}: cannot create it: {err.strerror or err}") from None
        lock = FileLock(self.path / LOCK_FILE, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            try:
                holder = f"PID {int((self.path / PID_FILE).read_text())}"
            except (OSError, ValueError):
                holder = "an unknown process"
            raise RunFolderError(f"{self.path} is in use by another run ({holder}): wait for it to end, stop it, "
                                 "or choose another --output-dir") from None
        (self.path / PID_FILE).write_text(f"{os.getpid()}\n")
        self._lock = lock

    def close(self) -> None:
        if self._lock is not None:
            (self.path / PID_FILE).unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def previous_run(self) -> list[str]:
        return sorted(name for name in RUN_FILES if (self.path / name).exists())

    def prepare(self, resume: bool, overwrite: bool) -> None:
        """Check the folder suits the run: `resume` needs a complete checkpoint (recovered after a crash if
        need be); otherwise a previous run in it is refused unless `overwrite`, which removes that run's files."""
        if resume and overwrite:
            raise RunFolderError("--resume and --overwrite contradict each other: give one")
        if resume:
            if recover(self.path / "checkpoint") is None:
                partial = [n for n in ("checkpoint", "checkpoint.tmp", "checkpoint.old") if (self.path / n).exists()]
                found = f"only incomplete {', '.join(partial)}" if partial else "none"
                raise RunFolderError(f"--resume: no complete checkpoint in {self.path} (found {found}): check the "
                                     "folder name, or start a new run without --resume")
            for name in ("best", "final"):
                recover(self.path / name)
            return
        previous = self.previous_run()
        if previous and not overwrite:
            raise RunFolderError(f"{self.path} already holds a run ({', '.join(previous)}): pass --resume to "
                                 "continue it, --overwrite to replace it, or choose another --output-dir")
        for name in previous:
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def open_run(folder: RunFolder, config, is_main: bool) -> dict:
    """Lock the output folder and check it suits the run (rank 0, before any model loads); every rank gets the
    verdict: the settings a resume changes ({name: [old, new]}), or the error, raised on every rank."""
    verdict: dict | Exception = {}
    if is_main:
        try:
            folder.lock()
            folder.prepare(config.resume, config.overwrite)
            if config.resume:
                checkpoint = folder.path / "checkpoint"
                verdict = compare(saved_config(checkpoint), asdict(config), asdict(type(config)()), checkpoint)
        except ValueError as err:
            folder.close()
            verdict = err
    verdict = dist_utils.broadcast_object(verdict)
    if isinstance(verdict, Exception):
        raise verdict
    return verdict


def truncate_log(path: Path, step: int, fields: list[str], renamed: dict[str, str] | None = None) -> None:
    """On resume, drop log rows past the checkpoint's step (they will be logged again); columns an earlier
    version named otherwise (`renamed`: old -> new) keep their values under the new name."""
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= step]
    for row in rows:
        for old, new in (renamed or {}).items():
            if old in row:
                row[new] = row.pop(old)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(rows)
