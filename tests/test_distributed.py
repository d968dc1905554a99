"""DDP on CPU (gloo): two torchrun processes train like one process on the global batch.

The worker (tests/dist_worker.py) trains with the Trainer for a few steps with BATCH_PER_RANK examples per
rank; here the same model is trained single-process on the global batch of 2 * BATCH_PER_RANK to compare.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dist_worker
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

import promptembedder.trainer as trainer_mod
from promptembedder.trainer import Trainer

TinyDir = Callable[[str], Path]
WORLD = 2

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)


def launch(out: Path, prompting: Path, embedding: Path, dataset: str = "default",
           timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
        str(Path(dist_worker.__file__)), str(out), str(prompting), str(embedding), dataset,
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def single_process(prompting: Path, embedding: Path, output_dir: Path, dataset: str = "default") -> dict:
    """The same training in this process, on the global batch (WORLD x the per-rank batch)."""
    threads = torch.get_num_threads()
    original_load_sts = trainer_mod.load_sts
    torch.set_num_threads(1)
    trainer_mod.load_sts = lambda split="test", root=None: list(dist_worker.DEV_PAIRS)
    try:
        config = dist_worker.make_config(str(prompting), str(embedding), str(output_dir),
                                         WORLD * dist_worker.BATCH_PER_RANK)
        trainer = Trainer(config, examples=dist_worker.DATASETS[dataset]())
        assert not trainer.distributed
        initial = dist_worker.trainable(trainer.model)
        losses = dist_worker.record_losses(trainer)
        trainer.train()
        return {"losses": losses, "initial": initial, "final": dist_worker.trainable(trainer.model)}
    finally:
        trainer_mod.load_sts = original_load_sts
        torch.set_num_threads(threads)


def rank_reports(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.fixture(scope="module")
def runs(tiny_model_dir: TinyDir, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The two-rank run and the single-process reference on the global batch."""
    p, e = tiny_model_dir("llama"), tiny_model_dir("bert")
    out = tmp_path_factory.mktemp("ddp")
    launch(out, p, e)
    return {
        "out": out,
        "ranks": rank_reports(out),
        "initial": [load_file(out / f"rank{r}_initial.safetensors") for r in range(WORLD)],
        "final": [load_file(out / f"rank{r}_final.safetensors") for r in range(WORLD)],
        "single": single_process(p, e, tmp_path_factory.mktemp("single") / "run"),
    }


def test_ranks_ran_distributed(runs: dict) -> None:
    for r, report in enumerate(runs["ranks"]):
        assert report["rank"] == report["env_rank"] == r
        assert report["world_size"] == WORLD and report["distributed"] is True
        assert report["steps"] == dist_worker.STEPS and len(report["losses"]) == dist_worker.STEPS


def test_models_are_built_deterministically(runs: dict) -> None:
    """Rank 0's model (which DDP broadcasts) is the model a single process builds from the same seed."""
    single = runs["single"]["initial"]
    for state in runs["initial"]:
        assert state.keys() == single.keys()
        for name, value in state.items():
            assert torch.equal(value, single[name]), name


def test_rank_loss_is_the_global_batch_loss(runs: dict) -> None:
    """Every rank computes the InfoNCE loss of the gathered global batch: the single-process loss."""
    expected = runs["single"]["losses"]
    for report in runs["ranks"]:
        assert report["losses"][0] == pytest.approx(expected[0], abs=1e-4)
        # Later steps too: the summed rank gradients were the global loss's gradient.
        assert report["losses"] == pytest.approx(expected, abs=1e-4)


def test_weights_identical_across_ranks_and_match_single_process(runs: dict) -> None:
    rank0, rank1 = runs["final"]
    initial, single = runs["initial"][0], runs["single"]["final"]
    assert rank0.keys() == rank1.keys() == single.keys()
    assert any(n.startswith("alignment.") for n in rank0) and any(n.startswith("generator.") for n in rank0)
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], atol=1e-7, rtol=0, msg=f"ranks differ in {name}")
        torch.testing.assert_close(rank0[name], single[name], atol=2e-5, rtol=1e-4,
                                   msg=f"{name}: DDP result differs from single-process training on the global batch")
    assert not torch.allclose(initial["alignment.linear.weight"], rank0["alignment.linear.weight"])


def test_only_rank_zero_writes(runs: dict) -> None:
    run_dir = runs["out"] / "run"
    assert sorted(d.name for d in run_dir.iterdir() if d.name.startswith("checkpoint")) == ["checkpoint"]
    assert (run_dir / "checkpoint" / "trainable.safetensors").is_file()
    assert torch.load(run_dir / "checkpoint" / "trainer_state.pt", weights_only=False)["step"] == dist_worker.STEPS
    assert (run_dir / "final").is_dir() and (run_dir / "train_summary.json").is_file()
    logs = list(runs["out"].rglob("log.csv"))
    assert logs == [run_dir / "log.csv"]
    with open(logs[0], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == list(range(1, dist_worker.STEPS + 1))
    # The logged loss is rank 0's, i.e. the global one.
    for row, loss in zip(rows, runs["ranks"][0]["losses"], strict=True):
        assert float(row["loss"]) == pytest.approx(loss, abs=1e-5)
    rank0_writes, rank1_writes = (report["writes"] for report in runs["ranks"])
    assert rank1_writes == []
    assert any(w.endswith("trainable.safetensors") for w in rank0_writes)


def test_ranks_with_and_without_hard_negatives(tiny_model_dir: TinyDir, tmp_path: Path) -> None:
    """A global batch where only one rank holds a hard negative still trains on the global loss."""
    p, e = tiny_model_dir("llama"), tiny_model_dir("bert")
    launch(tmp_path / "ddp", p, e, dataset="uneven-negatives")  # the worker times collectives out in 15 s
    expected = single_process(p, e, tmp_path / "single", dataset="uneven-negatives")["losses"]
    for report in rank_reports(tmp_path / "ddp"):
        assert report["losses"] == pytest.approx(expected, abs=1e-4)
