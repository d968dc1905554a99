"""Embedding a corpus too large for memory: streamed input, sharded output with ids, resume, one share per rank.

The input is read row by row (a text file, one text a line, or a .jsonl / .csv / .tsv / .parquet file with a text
column and an optional id column) and cut into shards of `shard_size` rows. Shard k holds rows
[k * shard_size, (k + 1) * shard_size) and is written as `shard-0000k.parquet` (columns `id` and `embedding`) to a
temporary name, then renamed: a shard file is complete or absent. A rerun with the same settings keeps complete
shards and redoes the rest, a half-written one included. Under torchrun / `accelerate launch` rank r encodes the
shards k with k % world_size == r on its own device, and rank 0 writes `manifest.json` once every shard is there.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .models.embedder import Embedder

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
DTYPES = {"float32": np.float32, "float16": np.float16}
#: Texts handed to `Embedder.encode` at once: its length sorting works inside each chunk; progress moves per chunk.
CHUNK_BATCHES = 8


class CorpusError(ValueError):
    """A corpus input or output folder that cannot be used as asked; the message names the file and what to do."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def _partial_name(index: int) -> str:
    return f".{shard_name(index)}.partial"


# --- reading ------------------------------------------------------------------------------------------------------
def _text_rows(path: Path) -> Iterator[tuple[Any, str, str]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                text = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
            except UnicodeDecodeError as err:
                raise CorpusError(f"{path}:{number}: not UTF-8 text (byte {err.start} of the line)") from None
            yield number - 1, text, f"{path}:{number}"


def _jsonl_rows(path: Path, text_column: str, id_column: str | None) -> Iterator[tuple[Any, str, str]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            where = f"{path}:{number}"
            if not raw.strip():
                raise CorpusError(f"{where}: blank line; each line must hold one JSON object: remove it")
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise CorpusError(f"{where}: not a JSON object ({err})") from None
            if not isinstance(row, dict):
                raise CorpusError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield _pick(row, text_column, id_column, number - 1, where)


def _csv_rows(path: Path, text_column: str, id_column: str | None) -> Iterator[tuple[Any, str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        try:
            for index, row in enumerate(reader):
                yield _pick(row, text_column, id_column, index, f"{path}:{reader.line_num}")
        except UnicodeDecodeError as err:
            raise CorpusError(f"{path}: not UTF-8 text near line {reader.line_num + 1} ({err.reason})") from None
        except csv.Error as err:
            raise CorpusError(f"{path}:{reader.line_num}: {err}") from None


def _parquet_rows(path: Path, text_column: str, id_column: str | None) -> Iterator[tuple[Any, str, str]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises its own error types for a damaged file
        raise CorpusError(f"{path}: not a readable parquet file ({err})") from None
    columns = [text_column] + ([id_column] if id_column else [])
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
        raise CorpusError(f"{path}: no column {missing[0]!r} (columns: {', '.join(parquet.schema_arrow.names)}); "
                          "choose it with --text-column / --id-column")
    index = 0
    for batch in parquet.iter_batches(batch_size=4096, columns=columns):
        for row in batch.to_pylist():
            yield _pick(row, text_column, id_column, index, f"{path}: row {index}")
            index += 1


def _pick(row: dict, text_column: str, id_column: str | None, index: int, where: str) -> tuple[Any, str, str]:
    if text_column not in row:
        raise CorpusError(f"{where}: no {text_column!r} key (keys: {', '.join(map(str, row))}); choose the text "
                          "with --text-column")
    text = row[text_column]
    if not isinstance(text, str):
        raise CorpusError(f"{where}: {text_column!r} is {type(text).__name__}, not text")
    if id_column is None:
        return index, text, where
    if row.get(id_column) is None:
        raise CorpusError(f"{where}: no {id_column!r} value; every row needs an id when --id-column is given")
    return str(row[id_column]), text, where


def read_rows(path: str | Path, text_column: str = "text", id_column: str | None = None
              ) -> Iterator[tuple[Any, str]]:
    """(id, text) of each row in file order, streamed; ids are row numbers from 0 without `id_column`. An empty
    text or a malformed row is a CorpusError naming its file and line (or row)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"--input {path}: no such file" + (" (a folder)" if path.is_dir() else ""))
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = _jsonl_rows(path, text_column, id_column)
    elif suffix in (".csv", ".tsv"):
        rows = _csv_rows(path, text_column, id_column)
    elif suffix == ".parquet":
        rows = _parquet_rows(path, text_column, id_column)
    else:
        if id_column is not None:
            raise CorpusError(f"--id-column: {path} is plain text (one text a line), it has no columns; ids are "
                              "line numbers from 0. Use .jsonl, .csv, .tsv or .parquet for ids of your own")
        rows = _text_rows(path)
    for row_id, text, where in rows:
        if not text.strip():
            raise CorpusError(f"{where}: empty text; an empty text has no embedding: remove the row")
        yield row_id, text


def _shards(rows: Iterator[tuple[Any, str]], shard_size: int) -> Iterator[tuple[list[Any], list[str]]]:
    ids: list[Any] = []
    texts: list[str] = []
    for row_id, text in rows:
        ids.append(row_id)
        texts.append(text)
        if len(texts) == shard_size:
            yield ids, texts
            ids, texts = [], []
    if texts:
        yield ids, texts


# --- writing ------------------------------------------------------------------------------------------------------
def _rows_in(path: Path) -> int | None:
    """A shard file's row count, or None when it is not a readable parquet file (half-written, damaged)."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # a truncated file fails in pyarrow's own ways
        return None


def _write_shard(out: Path, index: int, ids: list[Any], vectors: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(vectors.reshape(-1))
    table = pa.table({"id": pa.array(ids), "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
    partial = out / _partial_name(index)
    pq.write_table(table, partial)
    os.replace(partial, out / shard_name(index))


def _input_record(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _prepare(out: Path, settings: dict, overwrite: bool) -> None:
    """Create OUT, or check that the encoding in it was made with the same settings (then it resumes)."""
    if out.exists() and not out.is_dir():
        raise CorpusError(f"--output-dir {out} is a file: give a folder")
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST
    if path.exists():
        try:
            before = json.loads(path.read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CorpusError(f"{path} cannot be read ({err}): remove the folder or choose another one") from None
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed and not overwrite:
            key = changed[0]
            raise CorpusError(f"--output-dir {out} holds an encoding with other settings ({key}: "
                              f"{before.get(key)!r}, now {settings.get(key)!r}); choose another folder, or pass "
                              "--overwrite to replace its shards")
        if changed:
            for name in os.listdir(out):
                if name.startswith(("shard-", ".shard-")) and name.endswith((".parquet", ".partial")):
                    (out / name).unlink()
    elif any(out.iterdir()):
        raise CorpusError(f"--output-dir {out} is not empty and holds no {MANIFEST}: choose a new or empty folder")
    _write_json(path, {"format": FORMAT_VERSION, "settings": settings, "complete": False})


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def encode_corpus(embedder: Embedder, input: str | Path, out: str | Path, *, instruction: str | None = None,
                  prompt_type: str = "document", text_column: str = "text", id_column: str | None = None,
                  shard_size: int = 10_000, batch_size: int = 32, dtype: str = "float32", model_name: str = "",
                  overwrite: bool = False, show_progress_bar: bool | None = None, rank: int | None = None,
                  world_size: int | None = None) -> dict:
    """Embed every row of `input` into parquet shards under `out`; returns the manifest (rank 0's, complete).

    Rank and world size default to the torch.distributed process group's (one process: 0 and 1). `model_name`
    goes into the settings a rerun must match, with the input's path, size and mtime, the columns, the
    instruction, the prompt type, the shard size and the dtype.
    """
    from .training import distributed

    if shard_size < 1:
        raise CorpusError(f"--shard-size must be >= 1, got {shard_size}")
    if dtype not in DTYPES:
        raise CorpusError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    rank = distributed.rank() if rank is None else rank
    world_size = distributed.world_size() if world_size is None else world_size
    input, out = Path(input), Path(out)
    if not input.is_file():
        raise CorpusError(f"--input {input}: no such file")
    settings = {"model": model_name, "input": _input_record(input), "text_column": text_column,
                "id_column": id_column, "instruction": instruction, "prompt_type": prompt_type,
                "shard_size": shard_size, "dtype": dtype, "dim": int(embedder.embedding_dim)}
    if rank == 0:
        _prepare(out, settings, overwrite)
    _barrier()
    if show_progress_bar is None:
        show_progress_bar = sys.stderr.isatty()
    progress = tqdm(desc=f"Encoding (rank {rank})" if world_size > 1 else "Encoding", unit=" texts",
                    disable=not show_progress_bar)
    count = 0
    with progress:
        for index, (ids, texts) in enumerate(_shards(read_rows(input, text_column, id_column), shard_size)):
            count = index + 1
            if index % world_size != rank:
                continue
            if _rows_in(out / shard_name(index)) == len(texts):
                progress.update(len(texts))
                continue
            chunks = []
            for start in range(0, len(texts), batch_size * CHUNK_BATCHES):
                chunk = texts[start : start + batch_size * CHUNK_BATCHES]
                chunks.append(embedder.encode(chunk, instruction=instruction, batch_size=batch_size,
                                              prompt_type=prompt_type, show_progress_bar=False))
                progress.update(len(chunk))
            _write_shard(out, index, ids, np.concatenate(chunks).astype(DTYPES[dtype]))
    _barrier()
    if count == 0:
        raise CorpusError(f"--input {input}: no rows in it")
    manifest = {"format": FORMAT_VERSION, "settings": settings, "complete": True,
                "shards": [{"file": shard_name(i), "rows": _rows_in(out / shard_name(i))} for i in range(count)]}
    missing = [s["file"] for s in manifest["shards"] if s["rows"] is None]
    if missing:  # another rank failed: its shards are redone by the next run
        raise CorpusError(f"{out}: shard {missing[0]} is missing ({len(missing)} in all); rerun to finish them")
    manifest["rows"] = sum(s["rows"] for s in manifest["shards"])
    if rank == 0:
        _write_json(out / MANIFEST, manifest)
    return manifest


def read_embeddings(out: str | Path) -> tuple[list[Any], np.ndarray]:
    """(ids, (n, d) matrix) of a finished encoding, in input order."""
    import pyarrow.parquet as pq

    out = Path(out)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise CorpusError(f"{out / MANIFEST} cannot be read ({err}): is {out} an encode --output-dir?") from None
    if not manifest.get("complete"):
        raise CorpusError(f"{out}: the encoding is not finished; rerun the same encode command to complete it")
    ids: list[Any] = []
    parts = []
    for shard in manifest["shards"]:
        table = pq.read_table(out / shard["file"])
        ids.extend(table.column("id").to_pylist())
        dim = table.schema.field("embedding").type.list_size
        parts.append(table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim))
    dim = manifest["settings"]["dim"]
    return ids, (np.concatenate(parts) if parts else np.empty((0, dim), dtype=DTYPES[manifest["settings"]["dtype"]]))
