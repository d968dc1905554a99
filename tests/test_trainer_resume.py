"""Resuming training: an interrupted, crashed or Ctrl-C'd run resumed ends with the weights and log of an
uninterrupted one; tied embeddings checkpoint once; --resume without a checkpoint is refused."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trainer_helpers import TinyDir, make_config, mixed_examples, read_log, trainable_state

from promptembedder.models.prompt_embedder import PromptEmbedder
from promptembedder.training import Trainer

pytestmark = pytest.mark.usefixtures("one_thread", "dev_pairs")


# ---------------------------------------------------------------------------------------------------
# Resume after an interruption ends with the same weights as an uninterrupted run
# ---------------------------------------------------------------------------------------------------


class Crash(RuntimeError):
    """Stands in for the process dying: nothing is saved on the way out."""


@pytest.mark.parametrize("stop", ["interrupt", "crash"])
def test_interrupted_and_resumed_run_equals_uninterrupted(stop: str, tiny_model_dir: TinyDir, tmp_path: Path) -> None:
    """Run A: 12 steps straight. Run B: stopped after step 6, then resumed to 12. Same weights, same log.

    Ctrl-C (KeyboardInterrupt) checkpoints step 6; a crash leaves the step-4 checkpoint and log rows 5-6
    behind, which the resumed run must replace rather than duplicate.
    """
    p, e = tiny_model_dir("llama"), tiny_model_dir("bert")
    settings = dict(max_steps=12, save_steps=4, eval_steps=5, hard=False, tau_start=2.0, tau_end=0.5,
                    warmup_ratio=0.25)
    examples = mixed_examples()

    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(args, state, control, model) -> None:
        snapshots[state.global_step] = trainable_state(model)

    config_a = make_config(tmp_path, p, e, "a", **settings)
    trainer_a = Trainer(config_a, examples=examples, callbacks=[snapshot])
    initial = trainable_state(trainer_a.model)
    result_a = trainer_a.train()
    assert result_a.steps == 12 and not result_a.interrupted
    weights_a = trainable_state(trainer_a.model)

    def stop_after_6(args, state, control) -> None:
        if state.global_step == 6:
            raise KeyboardInterrupt if stop == "interrupt" else Crash

    config_b = make_config(tmp_path, p, e, "b", **settings)
    out_b = Path(config_b.output_dir)
    if stop == "interrupt":
        result_b = Trainer(config_b, examples=examples, callbacks=[stop_after_6]).train()
        assert result_b.interrupted and result_b.steps == 6
        checkpoint_step = 6
    else:
        with pytest.raises(Crash):
            Trainer(config_b, examples=examples, callbacks=[stop_after_6]).train()
        checkpoint_step = 4
        assert [int(r["step"]) for r in read_log(out_b)] == [1, 2, 3, 4, 5, 6]
    state = torch.load(out_b / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert state["step"] == checkpoint_step
    saved = load_file(out_b / "checkpoint" / "trainable.safetensors")
    assert saved.keys() == snapshots[checkpoint_step].keys()
    for name, value in saved.items():
        torch.testing.assert_close(value, snapshots[checkpoint_step][name], atol=1e-6, rtol=0)
    assert not (out_b / "final").exists() and not (out_b / "checkpoint.tmp").exists()

    resumed_config = make_config(tmp_path, p, e, "b", resume=True, **settings)
    resumed = Trainer(resumed_config, examples=examples)
    result_resumed = resumed.train()
    assert result_resumed.steps == 12 and not result_resumed.interrupted
    weights_b = trainable_state(resumed.model)

    # The same data, the same Gumbel noise (RNG state restored), the same optimizer and schedule state.
    assert weights_a.keys() == weights_b.keys()
    mismatched = [n for n in weights_a if not torch.allclose(weights_a[n], weights_b[n], atol=1e-6, rtol=0)]
    assert not mismatched, f"resumed weights differ from the uninterrupted run's: {mismatched[:5]}"
    # ... and a difference would show: training moved both W and P.
    assert not torch.allclose(initial["alignment.linear.weight"], weights_a["alignment.linear.weight"], atol=1e-4)
    assert any(not torch.allclose(initial[n], weights_a[n], atol=1e-4) for n in initial if n.startswith("generator."))

    rows_a, rows_b = read_log(config_a.output_dir), read_log(out_b)
    steps_b = [int(r["step"]) for r in rows_b]
    assert steps_b == list(range(1, 13)), f"log.csv of the resumed run has steps {steps_b}"
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        for column in ("loss", "lr", "tau", "dev_score"):
            a, b = row_a[column], row_b[column]
            assert (a == b == "") or math.isclose(float(a), float(b), abs_tol=2e-4), (column, row_a, row_b)


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
@pytest.mark.usefixtures("terminal_ctrl_c")
def test_ctrl_c_during_the_update_still_resumes_exactly(tiny_model_dir: TinyDir, tmp_path: Path) -> None:
    p, e = tiny_model_dir("llama"), tiny_model_dir("bert")
    settings = dict(max_steps=8, save_steps=4, hard=False)
    examples = mixed_examples()
    trainer_a = Trainer(make_config(tmp_path, p, e, "a", **settings), examples=examples)
    trainer_a.train()

    trainer_b = Trainer(make_config(tmp_path, p, e, "b", **settings), examples=examples)
    update, calls = trainer_b.optimizer.step, []

    def update_then_ctrl_c(*args, **kwargs):
        out = update(*args, **kwargs)
        calls.append(1)
        if len(calls) == 6:
            signal.raise_signal(signal.SIGINT)  # a real Ctrl-C, delivered right after the 6th update
        return out

    trainer_b.optimizer.step = update_then_ctrl_c
    assert trainer_b.train().interrupted
    resumed = Trainer(make_config(tmp_path, p, e, "b", resume=True, **settings), examples=examples)
    assert resumed.train().steps == 8
    weights_a, weights_b = trainable_state(trainer_a.model), trainable_state(resumed.model)
    assert all(torch.allclose(weights_a[n], weights_b[n], atol=1e-6, rtol=0) for n in weights_a)


def test_checkpoint_of_tied_trained_embeddings(tiny_model_dir: TinyDir, tmp_path: Path) -> None:
    """A P whose tied input/output embeddings train (tiny gemma3, like Gemma 3 270M) checkpoints the shared matrix
    once, and resuming restores it under both names, still tied, so training goes on as if uninterrupted."""
    p, e = tiny_model_dir("gemma3"), tiny_model_dir("bert")

    def trainer(name: str, steps: int, resume: bool = False) -> Trainer:
        model = PromptEmbedder(prompting_model=str(p), embedding_model=str(e), train_prompting_embeddings=True,
                               device="cpu")
        config = make_config(tmp_path, p, e, name, max_steps=steps, save_steps=2, resume=resume, hard=False,
                             do_eval=False, warmup_ratio=0.0, lr_scheduler="constant")
        return Trainer(config, model=model, examples=mixed_examples())

    uninterrupted = trainer("a", 4)
    uninterrupted.train()
    trainer("b", 2).train()
    saved = load_file(tmp_path / "b" / "checkpoint" / "trainable.safetensors")
    tied = {"generator.model.model.embed_tokens.weight", "generator.model.lm_head.weight"}
    assert len(tied & set(saved)) == 1
    resumed = trainer("b", 4, resume=True)
    assert resumed.train().steps == 4
    lm = resumed.model.generator.model
    assert lm.lm_head.weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()
    expected = trainable_state(uninterrupted.model)
    for n, value in trainable_state(resumed.model).items():
        torch.testing.assert_close(value, expected[n], atol=1e-6, rtol=0, msg=n)


def test_resume_without_checkpoint_is_an_error(tiny_model_dir: TinyDir, tmp_path: Path) -> None:
    """--resume with no checkpoint (e.g. a typo in the folder) is refused, not silently a fresh run (issue 16)."""
    config = make_config(tmp_path, tiny_model_dir("llama"), tiny_model_dir("bert"), resume=True, max_steps=2)
    with pytest.raises(ValueError, match="no complete checkpoint"):
        Trainer(config, examples=mixed_examples())
    assert not (Path(config.output_dir) / "log.csv").exists()
