"""Issue 30, export and encode output: an export never deletes what it did not write and is never left half-written;
`encode -o` checks it can write before encoding and never leaves a truncated .npy. A full disk is simulated by a
write that raises OSError(ENOSPC), an unwritable place by a path under /proc. Tiny models (the `saved` run)."""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_helpers import EXAMPLES, PAIRS, config, run, runner, text

import promptembedder.auto as auto
import promptembedder.export.exporter as export_module
from promptembedder.cli import app
from promptembedder.export.exporter import export
from promptembedder.hub.serialization import UnsafeFileError
from promptembedder.training import Trainer
from promptembedder.training.resume import ResumeWarning

pytestmark = pytest.mark.usefixtures("one_thread")
INSTRUCTIONS = {"para": "Find a paraphrase."}


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _full_disk_at(monkeypatch, name: str) -> None:
    """Writing the file `name` fails as on a full disk, after part of it was written."""
    write_text = Path.write_text

    def write(self, data, *args, **kwargs):
        if self.name == name:
            write_text(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write)


# --- 1. export --overwrite replaces an export's files only ----------------------------------------------------
def test_export_overwrite_keeps_the_users_files_and_refuses_models_and_runs(saved, tmp_path):
    model = saved / "final"
    out = export(model, tmp_path / "out", INSTRUCTIONS, verify=False)
    (out / "notes.txt").write_text("mine\n")
    (out / "mine").mkdir()
    (out / "mine" / "data.csv").write_text("a,b\n")
    export(model, out, {"other": "Classify the topic."}, overwrite=True, verify=False)
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "mine" / "data.csv").is_file()
    record = json.loads((out / "promptembedder_export.json").read_text())
    assert "other" in record["instructions"] and "para" not in record["instructions"]
    assert "notes.txt" not in record["files"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no out.tmp / out.old left behind
    (tmp_path / "link").symlink_to(out)  # through a symlink: the folder it points to is replaced, the link stays
    export(model, tmp_path / "link", INSTRUCTIONS, overwrite=True, verify=False)
    assert (tmp_path / "link").is_symlink() and (out / "notes.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "out"]
    (tmp_path / "link").unlink()

    shutil.copytree(model, out / "model")  # the model being exported lives inside OUT
    before = _listing(out)
    with pytest.raises(ValueError, match="holds the model being exported"):
        export(out / "model", out, INSTRUCTIONS, overwrite=True, verify=False)
    shutil.copytree(saved / "checkpoint", out / "runs" / "checkpoint")  # a saved run inside OUT
    with pytest.raises(ValueError, match="holds a saved model or training run"):
        export(model, out, INSTRUCTIONS, overwrite=True, verify=False)
    assert {k: v for k, v in _listing(out).items() if not k.startswith("runs")} == before

    (tmp_path / "empty").mkdir()  # an existing empty folder takes an export as a new one does
    assert (export(model, tmp_path / "empty", INSTRUCTIONS, verify=False) / "modules.json").is_file()
    work = tmp_path / "work"  # `export M . --overwrite` in a folder that is no export
    work.mkdir()
    (work / "train.py").write_text("print('my code')\n")
    result = runner.invoke(app, ["export", str(model), str(work), "--tasks", "sts-b", "--overwrite", "--no-verify"])
    assert result.exit_code == 2 and "is not an earlier export" in text(result)
    assert _listing(work) == {"train.py": b"print('my code')\n"}


# --- 2. an export is atomic: a full disk leaves the previous one whole -----------------------------------------
def test_export_on_a_full_disk_changes_nothing(saved, tmp_path, monkeypatch):
    model = saved / "final"
    out = export(model, tmp_path / "out", INSTRUCTIONS, verify=False)
    before = _listing(out)
    _full_disk_at(monkeypatch, "README.md")  # the last file an export writes
    result = runner.invoke(app, ["export", str(model), str(out), "--tasks", "sts-b", "--overwrite", "--no-verify"])
    assert result.exit_code == 2 and result.exception is None or isinstance(result.exception, SystemExit)
    assert "the disk is full" in text(result) and "previous export is intact" in text(result)
    assert _listing(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    result = runner.invoke(app, ["export", str(model), str(tmp_path / "new"), "--tasks", "sts-b", "--no-verify"])
    assert result.exit_code == 2 and "no folder was made" in text(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    monkeypatch.undo()

    def rust_full_disk(folder):  # safetensors and tokenizers raise plain Exceptions naming the OS error
        raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(export_module, "_ship_custom_pooling", rust_full_disk)
    result = runner.invoke(app, ["export", str(model), str(out), "--tasks", "sts-b", "--overwrite", "--no-verify"])
    assert result.exit_code == 2 and "the disk is full" in text(result), text(result)
    assert _listing(out) == before


# --- 3. encode -o: writable before encoding, never a truncated .npy -------------------------------------------
def test_encode_output_is_checked_first_and_written_whole(saved, tmp_path, monkeypatch):
    model = str(saved / "final")
    texts = tmp_path / "t.txt"
    texts.write_text("one text\nanother text\n")
    with monkeypatch.context() as patch:
        patch.setattr(auto, "load_embedder", lambda *a, **k: pytest.fail("the model loaded before the checks"))
        result = runner.invoke(app, ["encode", model, "-i", str(texts), "-o", "/proc/e.npy"])
        assert result.exit_code == 2 and "cannot write in /proc" in text(result)
        target = tmp_path / "e.npy"
        target.write_bytes(b"precious")
        target.chmod(0o444)
        result = runner.invoke(app, ["encode", model, "-i", str(texts), "-o", str(target)])
        assert result.exit_code == 2 and "read-only" in text(result)
        target.chmod(0o644)
    save = np.save

    def full_disk(file, array, *args, **kwargs):
        with open(file, "wb") as handle:
            handle.write(b"\x93NUMPY half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    result = runner.invoke(app, ["encode", model, "-i", str(texts), "-o", str(target), "--device", "cpu"])
    assert result.exit_code == 2 and "the disk is full" in text(result), text(result)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy", "t.txt"]
    assert target.read_bytes() == b"precious"  # the old file stays whole
    monkeypatch.setattr(np, "save", save)
    result = runner.invoke(app, ["encode", model, "-i", str(texts), "-o", str(target), "--device", "cpu"])
    assert result.exit_code == 0 and np.load(target).shape[0] == 2


# --- 4. --resume refuses changed training data ------------------------------------------------------------------
def test_resume_refuses_changed_training_data(models, tmp_path):
    data = tmp_path / "pairs.jsonl"
    rows = "".join(json.dumps(p) + "\n" for p in PAIRS)
    data.write_text(rows)
    out = tmp_path / "run"
    Trainer(config(models, out, train_data=[str(data)])).train()
    data.write_text("".join(json.dumps({**p, "negative": "rewritten"}) + "\n" for p in PAIRS[:5]))
    with pytest.raises(ValueError, match="pairs.jsonl changed since the checkpoint"):
        Trainer(config(models, out, train_data=[str(data)], resume=True, max_steps=3))
    data.write_text(rows)  # the original data: the refusal released the folder, the run goes on
    assert Trainer(config(models, out, train_data=[str(data)], resume=True, max_steps=3)).train().steps == 3
    run(models, tmp_path / "given")  # examples given in Python (or a named source's mined negatives) changed
    changed = [dataclasses.replace(e, negatives=("another negative",)) for e in EXAMPLES]
    with pytest.raises(ValueError, match="training examples differ from the checkpoint's"):
        Trainer(config(models, tmp_path / "given", resume=True, max_steps=3), examples=changed)


# --- 6. the trainer state loads with weights_only=True: a pickled payload never runs -----------------------------
class Payload:
    """What a tampered trainer_state.pt would carry: code run by unpickling."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_trainer_state_is_tensors_and_plain_values_only(models, saved, tmp_path):
    state = torch.load(saved / "checkpoint" / "trainer_state.pt", weights_only=True)
    out, marker = tmp_path / "run", tmp_path / "ran"
    shutil.copytree(saved, out)
    torch.save({**state, "extra": Payload(marker)}, out / "checkpoint" / "trainer_state.pt")
    with pytest.raises(UnsafeFileError, match="trainer_state.pt needs code .*builtins.exec.* is not loaded"):
        run(models, out, resume=True, max_steps=3)
    assert not marker.exists()
    state["rng"]["numpy"] = np.random.get_state()  # as checkpoints from before stored it: a numpy array
    torch.save(state, out / "checkpoint" / "trainer_state.pt")
    with pytest.warns(ResumeWarning, match="max_steps"):
        _, result = run(models, out, resume=True, max_steps=3)
    assert result.steps == 3
