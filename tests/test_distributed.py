"""DDP and FSDP on CPU (gloo): two torchrun processes train like one process on the global batch.

The worker (tests/dist_worker.py) trains with the Trainer for a few steps with BATCH_PER_RANK examples per
rank; here the same model is trained single-process on the global batch of 2 * BATCH_PER_RANK to compare.
Each variant (DDP, GradCache under DDP, gradient accumulation under DDP, FSDP, GradCache under FSDP, FSDP of a
LoRA-adapted P, the prompt-diversity term under DDP and under FSDP with GradCache, a LoRA baseline with
GradCache) must give the plain single-process result. The last test
launches the `promptembedder train` command itself with `accelerate launch`.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dist_worker
import numpy as np
import pytest
import torch
import torch.distributed as dist
import yaml
from safetensors.torch import load_file

import promptembedder.training.dev_evaluation as dev_evaluation_mod
from promptembedder.auto import load_embedder
from promptembedder.models.prompt_embedder import ALIGNMENT_FILE, PROMPTING_FILE
from promptembedder.training import Trainer, TrainingConfig

TinyDir = Callable[[str], Path]
WORLD = 2

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)


def run_command(command: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, f"launch failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def launch(out: Path, prompting: Path, embedding: Path, dataset: str = "default", variant: str = "ddp",
           stop_at: int = 0, resume: bool = False) -> subprocess.CompletedProcess:
    return run_command([
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
        str(Path(dist_worker.__file__)), str(out), str(prompting), str(embedding), dataset, variant, str(stop_at),
        str(int(resume)),
    ])


def single_process(prompting: Path, embedding: Path, output_dir: Path, dataset: str = "default",
                   variant: str = "ddp") -> dict:
    """The same training in this process, on the global batch (WORLD x the per-rank batch), with the plain step:
    no GradCache, no checkpointing, nothing to shard, and E's full forward (no reading once)."""
    threads = torch.get_num_threads()
    original_load_sts = dev_evaluation_mod.load_sts
    torch.set_num_threads(1)
    dev_evaluation_mod.load_sts = lambda split="test", root=None: list(dist_worker.DEV_PAIRS)
    changes = {k: v for k, v in dist_worker.VARIANTS[variant].items() if k not in ("grad_cache_chunk_size", "fsdp",
                                                                                       "gradient_checkpointing")}
    per_rank = changes.pop("batch_size", dist_worker.BATCH_PER_RANK)
    changes["read_once"] = False
    try:
        config = dist_worker.make_config(str(prompting), str(embedding), str(output_dir), WORLD * per_rank, **changes)
        trainer = Trainer(config, examples=dist_worker.DATASETS[dataset]())
        dist_worker.no_dropout(trainer.model)
        assert not trainer.distributed
        initial = dist_worker.trainable(trainer.model)
        losses = dist_worker.record_losses(trainer)
        trainer.train()
        return {"losses": losses, "initial": initial, "final": dist_worker.trainable(trainer.model)}
    finally:
        dev_evaluation_mod.load_sts = original_load_sts
        torch.set_num_threads(threads)


def rank_reports(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.fixture(scope="module", params=list(dist_worker.VARIANTS))
def runs(request: pytest.FixtureRequest, tiny_model_dir: TinyDir, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A two-rank run of one variant and the single-process reference on the global batch."""
    p, e = tiny_model_dir("llama"), tiny_model_dir(dist_worker.EMBEDDING_OF.get(request.param, "bert"))
    out = tmp_path_factory.mktemp(request.param)
    launch(out, p, e, variant=request.param)
    return {
        "variant": request.param,
        "out": out,
        "ranks": rank_reports(out),
        "initial": [load_file(out / f"rank{r}_initial.safetensors") for r in range(WORLD)],
        "final": [load_file(out / f"rank{r}_final.safetensors") for r in range(WORLD)],
        "single_dir": (single_dir := tmp_path_factory.mktemp("single") / "run"),
        "single": single_process(p, e, single_dir, variant=request.param),
    }


def micro_batches(variant: str) -> int:
    return dist_worker.VARIANTS[variant].get("gradient_accumulation_steps", 1)


def test_ranks_ran_distributed(runs: dict) -> None:
    for r, report in enumerate(runs["ranks"]):
        assert report["rank"] == report["env_rank"] == r
        assert report["world_size"] == WORLD and report["distributed"] is True
        assert report["steps"] == dist_worker.STEPS
        assert len(report["losses"]) == dist_worker.STEPS * micro_batches(runs["variant"])


def test_ranks_read_once_where_e_allows(runs: dict) -> None:
    """A suffix prompt on a decoder E takes the read-once path on every rank; an encoder E never does."""
    for report in runs["ranks"]:
        assert (report["read_once_calls"] > 0) == runs["variant"].endswith("read-once")


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
    if runs["variant"].startswith("lora"):
        assert all("lora_" in n for n in rank0)
    else:
        assert any(n.startswith("alignment.") for n in rank0) and any(n.startswith("generator.") for n in rank0)
    # LoRA's B starts at zero, so A's first gradients are ~0 and Adam turns their rounding noise (which differs
    # with the order of the sums, so with the machine's BLAS) into steps of up to lr = 1e-2. Such elements are few:
    # at most 1 % of a LoRA matrix may differ by more than 5e-3, none by more than two such steps; every other weight
    # agrees to 2e-5.
    lora = runs["variant"].startswith("lora")
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], atol=1e-7, rtol=0, msg=f"ranks differ in {name}")
        if lora:
            diff = (rank0[name] - single[name]).abs()
            assert diff.max() <= 2e-2 and (diff > 5e-3).float().mean() <= 0.01, (
                f"{name}: differs from single-process training on the global batch by up to {diff.max():.2e} "
                f"({(diff > 5e-3).sum()} of {diff.numel()} elements over 5e-3)")
        else:
            # Reading once sums E's attention in another order than the reference's full forward; with documents
            # behind a second prompt (the default instruction's), Adam turns that into up to 1.6e-5 after three
            # steps in one process too, and sharding adds its own order.
            atol = 5e-5 if runs["variant"].endswith("read-once") else 2e-5
            torch.testing.assert_close(rank0[name], single[name], atol=atol, rtol=1e-4,
                                       msg=f"{name}: result differs from single-process training on the global batch")
    changed = [n for n in rank0 if not torch.allclose(initial[n], rank0[n])]
    assert len(changed) > len(rank0) / 2, f"training changed only {changed}"


def test_saved_model_matches_single_process(runs: dict) -> None:
    """`final/` as rank 0 saved it (under FSDP, gathered from the shards) reloads to the single-process model."""
    texts = dist_worker.SENTENCES[:4]
    launched, single = (load_embedder(path / "final", device="cpu") for path in (runs["out"] / "run",
                                                                                  runs["single_dir"]))
    np.testing.assert_allclose(launched.encode(texts, instruction=dist_worker.INSTRUCTION),
                               single.encode(texts, instruction=dist_worker.INSTRUCTION), atol=1e-4)


def test_fsdp_shards_what_trains(runs: dict) -> None:
    """Under FSDP each rank stores about half of P and W; under DDP each rank stores all of them."""
    held = [report["local_elements"] for report in runs["ranks"]]
    total = runs["ranks"][0]["total_elements"]
    if runs["variant"].startswith("fsdp"):
        assert sum(held) >= total and max(held) < 0.55 * total
    else:
        assert held == [total] * WORLD


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
    # The logged loss is rank 0's, i.e. the global one (the mean over a step's micro-batches).
    micro, losses = micro_batches(runs["variant"]), runs["ranks"][0]["losses"]
    step_losses = [sum(losses[i : i + micro]) / micro for i in range(0, len(losses), micro)]
    for row, loss in zip(rows, step_losses, strict=True):
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


def test_fsdp_resume(tiny_model_dir: TinyDir, tmp_path: Path) -> None:
    """An FSDP run interrupted after step 2 and resumed (sharded weights and optimizer state reloaded) ends where
    uninterrupted training on the global batch does."""
    p, e = tiny_model_dir("llama"), tiny_model_dir("bert")
    out = tmp_path / "fsdp"
    launch(out, p, e, variant="fsdp", stop_at=2)
    assert all(r["interrupted"] and r["steps"] == 2 for r in rank_reports(out))
    state = torch.load(out / "run" / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2
    launch(out, p, e, variant="fsdp", resume=True)
    reference = single_process(p, e, tmp_path / "single", variant="fsdp")
    for report in rank_reports(out):
        assert report["steps"] == dist_worker.STEPS and not report["interrupted"]
        assert report["losses"] == pytest.approx(reference["losses"][2:], abs=1e-4)
    final = load_file(out / "rank0_final.safetensors")
    for name, value in reference["final"].items():
        torch.testing.assert_close(final[name], value, atol=2e-5, rtol=1e-4, msg=name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None,
                    reason="accelerate is not installed (pip install promptembedder[distributed])")
@pytest.mark.parametrize("fsdp", [None, "full_shard"])
def test_accelerate_launch_runs_the_train_command(tiny_model_dir: TinyDir, tmp_path: Path, fsdp: str | None) -> None:
    """`accelerate launch -m promptembedder train config.yaml [--fsdp full_shard]` trains on 2 CPU processes as one
    process does on the global batch, and only rank 0 writes the run. (On CPU, accelerate needs `--multi_gpu` to
    start its torchrun launcher; without it, it expects MPI.)"""
    p, e = tiny_model_dir("llama"), tiny_model_dir("bert")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"query": ex.query, "positive": ex.positive}) + "\n"
                            for ex in dist_worker.examples()))
    config = {
        "prompting_model": str(p), "embedding_model": str(e), "train_data": [str(data)], "output_dir": "",
        "device": "cpu", "show_progress_bar": False, "max_steps": 3, "batch_size": dist_worker.BATCH_PER_RANK,
        "learning_rate": 1e-3, "warmup_ratio": 0.0, "do_eval": False, "seed": 0,
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({**config, "output_dir": str(tmp_path / "accelerate")}))
    accelerate = Path(sys.executable).with_name("accelerate")
    proc = run_command([
        str(accelerate), "launch", "--multi_gpu", "--num_processes", str(WORLD), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "promptembedder", "train", str(config_path), *(["--fsdp", fsdp] if fsdp else []),
    ])
    summary = json.loads((tmp_path / "accelerate" / "train_summary.json").read_text())
    assert summary["steps"] == 3
    assert json.loads((tmp_path / "accelerate" / "training_config.json").read_text())["fsdp"] == fsdp
    assert proc.stdout.count('"steps": 3') == 1  # one rank printed the result

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = TrainingConfig(**{**config, "output_dir": str(tmp_path / "single"),
                                   "batch_size": WORLD * dist_worker.BATCH_PER_RANK})
        Trainer(single).train()
    finally:
        torch.set_num_threads(threads)
    for name in (ALIGNMENT_FILE, PROMPTING_FILE):
        launched, reference = (load_file(tmp_path / run / "final" / name) for run in ("accelerate", "single"))
        for key, value in reference.items():
            torch.testing.assert_close(launched[key], value, atol=2e-5, rtol=1e-4, msg=f"{name}: {key}")
    assert sorted(d.name for d in (tmp_path / "accelerate").iterdir() if d.name.startswith("checkpoint")) == [
        "checkpoint"
    ]
