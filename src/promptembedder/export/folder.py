"""The folder an export writes: never a model or a run, never a user's own files deleted, never left half-written.

An export is written whole into `OUT.tmp` beside `OUT` and swapped in only when complete (and verified), so a full
disk or a crash leaves the previous export as it was. `--overwrite` replaces only a previous export: the files it
wrote (its record lists them) are replaced, anything else in the folder stays; a folder that holds a saved model, a
training run or files of no export is refused, so `export M . --overwrite` cannot empty a working directory.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..models.config import BASELINE_CONFIG, CONFIG_NAME
from ..training.run_folder import COMPLETE_FILE

EXPORT_RECORD = "promptembedder_export.json"
#: Written first into OUT.tmp and removed when the export is complete: a leftover OUT.tmp holding it is ours.
PARTIAL_MARKER = ".export-partial"
#: Files whose presence means a saved model or a training run (which an export must never replace).
PRECIOUS = (CONFIG_NAME, BASELINE_CONFIG, "trainer_state.pt", "training_config.json", COMPLETE_FILE, ".lock")


class ExportFolderError(FileExistsError, ValueError):
    """OUT cannot take an export as asked (not empty, holds a model or run, is the model's folder)."""


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(f"{path.name}.{suffix}")


def _precious(folder: Path) -> Path | None:
    """The first file under `folder` that belongs to a saved model or a run, if any."""
    for name in PRECIOUS:
        found = next(iter(sorted(folder.rglob(name))), None)
        if found is not None:
            return found
    return None


def _written_by_export(folder: Path) -> set[str]:
    """The top-level names a previous export wrote into `folder`, from its record (none in a folder without one:
    an empty folder, or files that appeared while the export was written, which all stay)."""
    if not (folder / EXPORT_RECORD).is_file():
        return set()
    record = json.loads((folder / EXPORT_RECORD).read_text())
    files = record.get("files") if isinstance(record, dict) else None
    # An export recorded before its file list: what the new export writes is replaced, nothing else.
    return {str(name) for name in files} | {EXPORT_RECORD} if isinstance(files, list) else {EXPORT_RECORD}


def check_target(out: Path, model_dir: Path | None, overwrite: bool) -> None:
    """Refuse an OUT that cannot take this export, before anything loads: checked again when swapping in."""
    out = Path(out).resolve() if Path(out).is_symlink() else Path(out)
    if model_dir is not None:
        model, target = model_dir.resolve(), out.resolve()
        if model == target or target in model.parents:
            raise ExportFolderError(f"OUT {out} holds the model being exported ({model_dir}): choose another folder")
    parent = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if parent == out.absolute():
        parent = parent.parent
    try:  # OUT.tmp is made beside OUT: fail now, not after minutes of loading, on a read-only place or /proc
        tempfile.TemporaryDirectory(dir=parent, prefix=f".{out.name}.check").cleanup()
    except OSError as err:
        raise ExportFolderError(f"cannot write the export beside {out} (in {parent}): "
                                f"{err.strerror or err}") from None
    leftover = _sibling(out, "old")
    if leftover.exists():
        raise ExportFolderError(f"{leftover} exists: an export was interrupted while replacing {out}; check which "
                                "of the two holds your files, then remove it")
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportFolderError(f"OUT {out} is a file: give a folder name")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise ExportFolderError(f"{out} exists and is not empty: choose another folder or pass --overwrite")
    if not (out / EXPORT_RECORD).is_file():
        raise ExportFolderError(f"--overwrite: {out} is not an earlier export (no {EXPORT_RECORD}); --overwrite only "
                                "replaces an export: choose another folder")
    precious = _precious(out)
    if precious is not None:
        raise ExportFolderError(f"--overwrite: {out} holds a saved model or training run ({precious}); an export "
                                "never replaces one: choose another folder")
    try:
        _written_by_export(out)
    except (OSError, ValueError) as err:
        raise ExportFolderError(f"--overwrite: {out / EXPORT_RECORD} cannot be read ({err}): remove the old export "
                                "yourself, or choose another folder") from None


def _swap_in(staging: Path, out: Path) -> None:
    """Move the complete export in `staging` to `out`, keeping what `out` holds that no export wrote; a failure
    part way puts everything back as it was."""
    if not out.exists():
        staging.rename(out)
        return
    old = _sibling(out, "old")
    keep = sorted({p.name for p in out.iterdir()} - _written_by_export(out) - {p.name for p in staging.iterdir()})
    out.rename(old)
    moved = []
    try:
        for name in keep:
            (old / name).rename(staging / name)
            moved.append(name)
        staging.rename(out)
    except OSError:
        for name in moved:
            (staging / name).rename(old / name)
        old.rename(out)
        shutil.rmtree(staging, ignore_errors=True)  # only the new export's own files are left in it
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged(out: Path, model_dir: Path | None, overwrite: bool) -> Iterator[Path]:
    """Yield `OUT.tmp` to write the export into; swap it in when the block ends without error, otherwise remove
    it and leave OUT as it was. A failed write (full disk, no permission) becomes an OSError naming OUT. A symlink
    OUT stays a symlink: the export replaces the folder it points to."""
    out = Path(out).resolve() if Path(out).is_symlink() else Path(out)
    check_target(out, model_dir, overwrite)
    staging = _sibling(out, "tmp")
    if staging.exists():
        if not (staging / PARTIAL_MARKER).is_file():
            raise ExportFolderError(f"{staging} exists and is not an interrupted export of ours: move it away first")
        shutil.rmtree(staging)
    try:
        staging.mkdir(parents=True)
        (staging / PARTIAL_MARKER).write_text("an export in progress; removed when it is complete\n")
        yield staging
        _record_files(staging)
        check_target(out, model_dir, overwrite)  # the folder may have changed while the export was written
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if _os_error(err) is None:
            raise
        raise _write_error(err, out) from err
    (staging / PARTIAL_MARKER).unlink()
    try:
        _swap_in(staging, out)
    except OSError as err:
        raise _write_error(err, out) from err


def _write_error(err: BaseException, out: Path) -> OSError:
    """A failed write (full disk, no permission) as one OSError naming OUT and saying nothing changed."""
    code = _os_error(err) or errno.EIO
    reason = "the disk is full" if code == errno.ENOSPC else os.strerror(code)
    kept = "the previous export is intact" if out.exists() else "no folder was made"
    error = OSError(f"cannot write the export to {out}: {reason}; nothing was changed ({kept})")
    error.errno = code
    return error


def _os_error(err: BaseException) -> int | None:
    """The OS error number behind a failed write: an OSError's, or the one safetensors and tokenizers (Rust) name
    in a plain Exception ("... (os error 28)"); None for anything else."""
    if isinstance(err, ExportFolderError):
        return None
    if isinstance(err, OSError):
        return err.errno or errno.EIO
    found = re.search(r"\(os error (\d+)\)", str(err)) if isinstance(err, Exception) else None
    return int(found.group(1)) if found else None


def _record_files(staging: Path) -> None:
    """List in the export's record the top-level names it wrote: what a later --overwrite may replace."""
    path = staging / EXPORT_RECORD
    record = json.loads(path.read_text())
    record["files"] = sorted(p.name for p in staging.iterdir() if p.name != PARTIAL_MARKER)
    path.write_text(json.dumps(record, indent=2) + "\n")
