"""What a resumed run may change: settings that make the same model go on; anything else is refused.

A resumed run must end with the weights an uninterrupted run would have, so every setting that shapes the
model, the data, the batches or the optimisation must match the checkpoint's. The learning rates are refused
too, not applied: the optimizer and scheduler state restored from the checkpoint carry the old ones, and a
silently mixed schedule is worse than an error. Only the run's length, its bookkeeping and how it is executed
(device, memory savings) may change; they are warned about and recorded in `resumes.jsonl`.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path

#: Settings a resumed run may change: how long it runs, what it evaluates and logs, and how it is executed.
MAY_CHANGE = frozenset({
    "max_steps", "eval_steps", "save_steps", "logging_steps", "eval_max_pairs", "target_score", "stop_at_target",
    "show_progress_bar", "do_eval", "save_model", "device", "bf16", "grad_cache_chunk_size", "fsdp",
    "gradient_checkpointing", "read_once",
})
#: The checkpoint's record of the training data (`data_hashes`).
DATA_FILE = "data_hashes.json"
#: Settings that only say how this invocation treats the folder.
IGNORED = frozenset({"resume", "overwrite", "output_dir"})


class ResumeWarning(UserWarning):
    """A resumed run changes a setting that may legitimately change (e.g. max_steps)."""


def compare(saved: dict, current: dict, defaults: dict, source: Path) -> dict[str, list]:
    """Refuse changes that make a different run; return the allowed ones as {name: [old, new]}.

    A setting the checkpoint predates is compared with its default (a new option left at its default is no
    change)."""
    changed = {}
    for name, value in current.items():
        old = saved.get(name, defaults.get(name))
        if name not in IGNORED and old != value and not _same_sequence(old, value):
            changed[name] = [old, value]
    refused = {k: v for k, v in changed.items() if k not in MAY_CHANGE}
    if refused:
        listing = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise ValueError(f"--resume: {source} was trained with other settings ({listing}); these make a different "
                         "run (the learning rates too: the checkpoint's optimizer and schedule hold the old ones). "
                         "Resume with the original values, or start a new run (--overwrite or another --output-dir)."
                         f" May change on resume: {', '.join(sorted(MAY_CHANGE))}")
    return changed


def _same_sequence(a, b) -> bool:
    """A YAML list and a JSON-restored list, or a tuple and a list, are the same setting."""
    return isinstance(a, list | tuple) and isinstance(b, list | tuple) and list(a) == list(b)


def record(output_dir: Path, step: int, changed: dict[str, list]) -> None:
    """Warn about allowed changes and append them to output_dir/resumes.jsonl (with the step and time)."""
    if not changed:
        return
    listing = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
    warnings.warn(f"resuming {output_dir} at step {step} with changed settings: {listing}", ResumeWarning,
                  stacklevel=3)
    with open(output_dir / "resumes.jsonl", "a") as handle:
        handle.write(json.dumps({"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "changed": changed},
                                default=str) + "\n")


def data_hashes(specs: list, examples: list) -> dict:
    """What the run trains on: a SHA-256 of each data file in `train_data` and one of all its examples (which also
    covers named sources and their mined negatives), with their count. Saved with every checkpoint."""
    files = {}
    for spec in specs:
        path = Path(spec["path"] if isinstance(spec, dict) else spec)
        if path.suffix and path.is_file():
            with open(path, "rb") as handle:
                files[str(path)] = hashlib.file_digest(handle, "sha256").hexdigest()
    digest = hashlib.sha256()
    for example in examples:
        digest.update(repr(example).encode())
    return {"files": files, "examples": digest.hexdigest(), "count": len(examples)}


def check_data(checkpoint: Path, current: dict) -> None:
    """Refuse a resume whose training data differs from the checkpoint's: only its path used to be compared, so a
    rewritten file resumed silently into a different run. A checkpoint from before the hashes is warned about."""
    path = checkpoint / DATA_FILE
    if not path.is_file():
        warnings.warn(f"{checkpoint} has no {DATA_FILE} (written before data hashes): the training data cannot be "
                      "checked against the checkpoint's", ResumeWarning, stacklevel=3)
        return
    try:
        saved = json.loads(path.read_text())
        saved["files"].items()  # noqa: B018 (the shape check_data reads)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is corrupt or incomplete ({err}): resume from an earlier copy, or start a new "
                         "run") from None
    advice = ("a resumed run must train on the same data: restore it, or start a new run (--overwrite or another "
              "--output-dir)")
    for name, digest in saved.get("files", {}).items():
        now = current["files"].get(name)
        if now != digest:
            what = "is gone" if now is None and not Path(name).is_file() else "changed"
            raise ValueError(f"--resume: train_data file {name} {what} since the checkpoint (sha256 {digest[:12]} "
                             f"then, {(now or '-')[:12]} now); {advice}")
    if saved.get("examples") != current["examples"]:
        raise ValueError(f"--resume: the training examples differ from the checkpoint's ({saved.get('count')} then, "
                         f"{current['count']} now: a data file, a named source or its mined negatives changed); "
                         f"{advice}")


def saved_config(checkpoint: Path) -> dict:
    """The training config a checkpoint was written with (its JSON copy, else the one in trainer_state.pt)."""
    path = checkpoint / "training_config.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is corrupt or incomplete ({err}): restore it, or start a new run") from err
    from ..hub.serialization import read_torch

    return read_torch(checkpoint / "trainer_state.pt").get("config", {})
