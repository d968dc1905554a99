"""The CLI's files: input texts checked line by line and output paths checked before any long work starts."""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def read_texts(path: Path) -> list[str]:
    """One text per line from a UTF-8 file ('-': stdin); a blank line is an error at file:line."""
    name = "<stdin>" if str(path) == "-" else str(path)
    raw = b""
    try:
        raw = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
        lines = raw.decode("utf-8").split("\n")
    except FileNotFoundError:
        raise ValueError(f"--input {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"--input {path} is a folder: give a text file, one text per line") from None
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"{name}:{line}: not UTF-8 text (byte {err.start}); convert the file, e.g. "
                         f"iconv -f latin1 -t utf-8") from None
    except OSError as err:
        raise ValueError(f"--input {path}: cannot read it: {err.strerror}") from None
    if lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise ValueError(f"{name}:{number}: blank line; each line must hold one text: remove it")
    if not lines:
        raise ValueError(f"{name}: no texts in it (one text per line)")
    return lines


def npy_path(output: Path) -> Path:
    """Where numpy.save writes: it appends .npy to a name without it (`-o x` writes x.npy)."""
    return output if output.suffix == ".npy" else output.with_name(output.name + ".npy")


def check_output_file(path: Path, flag: str) -> None:
    """An output file's folder must exist and take a new file (a read-only file system, /proc), and the path must
    not be a folder: checked before the work, not after."""
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder: give a file name, e.g. {path / 'results.json'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: the folder {parent} does not exist: create it first")
    if path.exists() and not (os.access(path, os.W_OK) and path.stat().st_mode & 0o222):  # root: mode bits too
        raise ValueError(f"{flag} {path} exists and is read-only: choose another file, or make it writable")
    try:  # what the write will do: a new file beside the target (os.access says yes on a read-only mount)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {path}: cannot write in {parent}: {err.strerror or err}") from None


@contextmanager
def atomic_output(path: Path, flag: str) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix) to write to; renamed onto `path` when the block succeeds, removed
    when it fails, so a full disk never leaves a truncated file. A failed write is a ValueError naming `flag`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial{path.suffix}")  # plain open(): the umask's mode
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        reason = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        if err.errno is None and "requested and" in str(err):  # numpy's short write: a full disk, unnamed
            reason = f"the disk is full ({err})"
        raise ValueError(f"{flag} {path}: cannot write it: {reason}; nothing was written") from None
    finally:
        tmp.unlink(missing_ok=True)
