"""Issue 16, items 1-7: no silent NaN models, no silently lost or mixed runs.

Each test names the issue's item it covers. Runs are tiny (tiny models, 1-3 steps, no dev evaluation); the
signal test runs the real CLI in a subprocess, which also holds the folder's lock for the lock test.
Items 8-13 (clear errors instead of tracebacks) are in test_reliability_errors.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from reliability_helpers import EXAMPLES, PAIRS, config, run

from promptembedder.training import Trainer, TrainingConfig, interrupts
from promptembedder.training.numerics import NonFiniteError
from promptembedder.training.resume import ResumeWarning
from promptembedder.training.run_folder import COMPLETE_FILE, RunFolderError, recover, truncate_log

pytestmark = pytest.mark.usefixtures("one_thread")


# --- 1. non-finite training -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["temperature", "tau_start", "tau_end"])
@pytest.mark.parametrize("value", [0.0, -0.05])
def test_temperatures_must_be_positive(name, value):
    with pytest.raises(ValueError, match=f"{name} must be > 0"):
        TrainingConfig(**{name: value})


def test_non_finite_loss_stops_before_the_update(models, tmp_path):
    """A NaN loss at step 2 stops the run with a clear error; the step-1 checkpoint stays finite, no final/."""
    trainer = Trainer(config(models, tmp_path / "run", max_steps=3, save_steps=1), examples=EXAMPLES)
    loss_of, calls = trainer.loss, []

    def nan_at_step_2(batch):
        calls.append(1)
        loss = loss_of(batch)
        return loss * float("nan") if len(calls) == 2 else loss

    trainer.loss = nan_at_step_2
    with pytest.raises(NonFiniteError, match="step 2: the loss is nan"):
        trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    out = tmp_path / "run"
    assert not (out / "final").exists() and not (out / "train_summary.json").exists()
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 1


def test_summary_is_valid_json_when_no_step_runs(models, saved, tmp_path):
    """Resuming a finished run runs no step: its summary has no NaN (invalid JSON), null instead."""
    out = tmp_path / "run"
    shutil.copytree(saved, out)
    run(models, out, resume=True)
    summary = json.loads((out / "train_summary.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert summary["median_step_time_s"] is None and summary["steps"] == 2


# --- 2. an existing output folder ---------------------------------------------------------------------------
def test_existing_run_is_refused_unless_overwrite(models, tmp_path):
    out = tmp_path / "run"
    run(models, out)
    (out / "notes.txt").write_text("mine")
    log = (out / "log.csv").read_text()
    with pytest.raises(RunFolderError, match="already holds a run.*--overwrite"):
        Trainer(config(models, out, max_steps=1), examples=EXAMPLES)
    assert (out / "log.csv").read_text() == log and (out / "final").is_dir()
    _, result = run(models, out, max_steps=1, overwrite=True)
    assert result.steps == 1 and (out / "notes.txt").read_text() == "mine"  # only the run's own files go
    assert [line.split(",")[0] for line in (out / "log.csv").read_text().splitlines()[1:]] == ["1"]


# --- 3. resume: a missing checkpoint is an error; a crash mid-save is recovered -------------------------------
def test_resume_recovers_a_complete_checkpoint_tmp(models, saved, tmp_path):
    """The crash window of a save: checkpoint/ renamed away, checkpoint.tmp complete. Resume uses it, keeps the
    log's rows and goes on."""
    out = tmp_path / "run"
    shutil.copytree(saved, out)
    (out / "checkpoint").rename(out / "checkpoint.tmp")
    with pytest.warns(ResumeWarning):
        _, result = run(models, out, resume=True, max_steps=3)
    assert result.steps == 3 and not (out / "checkpoint.tmp").exists()
    assert [line.split(",")[0] for line in (out / "log.csv").read_text().splitlines()[1:]] == ["1", "2", "3"]


def test_resume_refuses_a_partial_checkpoint_and_keeps_it(models, saved, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(saved, out)
    (out / "checkpoint" / COMPLETE_FILE).unlink()
    (out / "checkpoint").rename(out / "checkpoint.tmp")
    log = (out / "log.csv").read_text()
    with pytest.raises(RunFolderError, match="only incomplete checkpoint.tmp"):
        Trainer(config(models, out, resume=True), examples=EXAMPLES)
    assert (out / "checkpoint.tmp" / "trainer_state.pt").exists() and (out / "log.csv").read_text() == log


def test_recover_picks_the_newest_complete_folder(tmp_path):
    for name, step in (("checkpoint.old", 4), ("checkpoint.tmp", 6)):
        (tmp_path / name).mkdir()
        (tmp_path / name / COMPLETE_FILE).write_text(json.dumps({"step": step}))
    assert recover(tmp_path / "checkpoint") == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


# --- 5. best/ and final/ are replaced atomically ----------------------------------------------------------
def test_a_crash_while_saving_best_leaves_the_previous_best_whole(models, tmp_path):
    trainer = Trainer(config(models, tmp_path / "run"), examples=EXAMPLES)
    best = tmp_path / "run" / "best"
    trainer.save_pretrained(best)
    before = {p.name: p.read_bytes() for p in best.iterdir()}
    with torch.no_grad():
        trainer.model.alignment.linear.weight.add_(1.0)

    def crash_midway(directory):
        (Path(directory) / "alignment.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    trainer.model.save_pretrained = crash_midway
    with pytest.raises(KeyboardInterrupt):
        trainer.save_pretrained(best)
    assert {p.name: p.read_bytes() for p in best.iterdir()} == before
    trainer.folder.close()


# --- 6. resume compares the settings with the checkpoint's ----------------------------------------------------
@pytest.mark.parametrize(("change", "name"), [({"batch_size": 8}, "batch_size"), ({"learning_rate": 0.1},
                                              "learning_rate"), ({"num_soft_tokens": 3}, "num_soft_tokens")])
def test_resume_refuses_settings_that_make_another_run(models, saved, change, name):
    with pytest.raises(ValueError, match=f"other settings.*{name}"):
        Trainer(config(models, saved, resume=True, **change), examples=EXAMPLES)


def test_resume_warns_about_and_records_a_longer_run(models, saved, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(saved, out)
    with pytest.warns(ResumeWarning, match="max_steps: 2 -> 3"):
        _, result = run(models, out, resume=True, max_steps=3)
    assert result.steps == 3
    assert json.loads((out / "resumes.jsonl").read_text())["changed"] == {"max_steps": [2, 3]}


# --- 4 and 7. the folder lock; SIGTERM and SIGINT checkpoint and exit 143 / 130 ------------------------------
def test_signals_checkpoint_and_exit_with_128_plus_signal(models, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"prompting_model": models[0], "embedding_model": models[1], "train_data": str(data),
                                   "batch_size": 4, "max_steps": 100000, "save_steps": 100000, "logging_steps": 1,
                                   "do_eval": False, "show_progress_bar": False, "device": "cpu"}))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}

    def train_until_stopped(sig: int, resume: bool) -> tuple[int, int]:
        args = [sys.executable, "-m", "promptembedder", "train", str(cfg), "--output-dir", str(out)]
        # As from a terminal: a suite run in the background (`nohup ... &`) would pass on an ignored SIGINT.
        proc = subprocess.Popen(args + (["--resume"] if resume else []), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline, start_rows = time.time() + 420, rows()  # startup is slow on a crowded machine
            while rows() < start_rows + 2:  # wait for two new steps
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()
                time.sleep(0.2)
            if sig == signal.SIGTERM:  # 4: a second run on the folder is refused, naming this one's PID
                with pytest.raises(RunFolderError, match=f"in use by another run \\(PID {proc.pid}\\)"):
                    Trainer(config(models, out, resume=True), examples=EXAMPLES)
            proc.send_signal(sig)
            proc.communicate(timeout=300)  # drains its output while it checkpoints (a full pipe would block it)
            code = proc.returncode
        finally:
            proc.kill()
        return code, torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)["step"]

    def rows() -> int:
        log = out / "log.csv"
        return max(len(log.read_text().splitlines()) - 1, 0) if log.exists() else 0

    code, step = train_until_stopped(signal.SIGTERM, resume=False)
    assert code == 143 and step >= 2
    code, resumed_step = train_until_stopped(signal.SIGINT, resume=True)
    assert code == 130 and resumed_step >= step + 2


class _SignalsInFinalizer:
    """Sends SIGINT from __del__: the handler then runs inside the finalizer, where Python prints the
    KeyboardInterrupt instead of raising it (the suspected cause of a rare hang of the test above)."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(1000))  # bytecode for the interpreter to run the handler in


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.usefixtures("terminal_ctrl_c")
def test_a_stop_signal_lost_in_a_finalizer_still_stops_the_run(models, tmp_path):
    steps = []

    def lose_a_signal_at_step_2(args, state, control):
        steps.append(state.global_step)
        if state.global_step == 2:
            _SignalsInFinalizer()  # collected at once: the interrupt is swallowed here

    trainer = Trainer(config(models, tmp_path / "run", max_steps=50), examples=EXAMPLES,
                      callbacks=[lose_a_signal_at_step_2])
    result = trainer.train()
    assert steps == [1, 2] and result.interrupted and result.stop_signal == signal.SIGINT
    assert torch.load(tmp_path / "run" / "checkpoint" / "trainer_state.pt", weights_only=False)["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is not interrupts._raise  # the handlers are restored after the run


def test_an_ignored_stop_signal_stays_ignored_in_training_and_in_the_update():
    """A process started ignoring SIGINT (a background job) keeps ignoring it, also while an update is held back."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        restore = interrupts.catch_stop_signals()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        with interrupts.deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        interrupts.raise_pending()  # nothing was received, so nothing is raised
        restore()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_resumed_log_keeps_a_column_an_earlier_version_named_otherwise(tmp_path):
    """log.csv's dev_spearman became dev_score: a run resumed from then keeps its dev values, past rows dropped."""
    log = tmp_path / "log.csv"
    log.write_text("step,loss,dev_spearman\n1,2.0,\n2,1.5,41.250\n3,1.2,\n")
    truncate_log(log, 2, ["step", "loss", "dev_score"], {"dev_spearman": "dev_score"})
    assert log.read_text().splitlines() == ["step,loss,dev_score", "1,2.0,", "2,1.5,41.250"]
