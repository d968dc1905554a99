"""Benchmarks for the paper's efficiency claims: training step time and memory vs LoRA, encode
throughput, and time to a target score (training from scratch and transfer to a new backbone).

Each training measurement runs in its own subprocess (under torchrun when several processes are asked
for) so peak memory is that method's alone, and methods are interleaved round by round so machine drift
hits all of them alike.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from ..data.datasets import NLI_INSTRUCTION, TrainExample, data_dir, load_snli_triplets, load_sts
from ..environment import environment
from ..training import TRANSFER_ALIGNMENT_LR, Trainer, TrainingConfig
from ..training import distributed as dist_utils
from ..training.numerics import json_safe
from ..training.plotting import plot_bars

METHOD_VARIANTS = {
    "promptembedder-query": {"method": "promptembedder", "prompt_on": "query"},
    "promptembedder-both": {"method": "promptembedder", "prompt_on": "both"},
    # E's full forward (every position with a graph) instead of reading the text once: the comparison rows.
    "promptembedder-query-no-read-once": {"method": "promptembedder", "prompt_on": "query", "read_once": False},
    "promptembedder-both-no-read-once": {"method": "promptembedder", "prompt_on": "both", "read_once": False},
    # The prompt-diversity term: each step also generates P's prompts for 3 other instructions (see training.losses).
    "promptembedder-query-diversity": {"method": "promptembedder", "prompt_on": "query", "prompt_diversity": 1.0},
    "lora": {"method": "lora"},
    "prompt-tuning": {"method": "prompt-tuning"},
    "full": {"method": "full"},
    # P and W sharded over the processes (needs nproc_per_node >= 2), against promptembedder-query under DDP.
    "promptembedder-fsdp": {"method": "promptembedder", "prompt_on": "query", "fsdp": "full_shard"},
    "promptembedder-fsdp-grad-op": {"method": "promptembedder", "prompt_on": "query", "fsdp": "shard_grad_op"},
}


def fixed_length_examples(count: int, seq_len: int) -> list[TrainExample]:
    """Real SNLI triplets, each text repeated to at least seq_len words and cut at seq_len tokens later."""
    base = load_snli_triplets(instruction=NLI_INSTRUCTION)

    def stretch(text: str) -> str:
        words = text.split()
        return " ".join((words * (seq_len // max(len(words), 1) + 1))[:seq_len])

    return [TrainExample(stretch(e.query), stretch(e.positive), tuple(stretch(n) for n in e.negatives),
                         e.instruction) for e in (base * (count // len(base) + 1))[:count]]


def fill_document_cache(trainer: Trainer, examples: list[TrainExample], batch_size: int) -> int:
    """Embed every document once into the trainer's cache, as the first epoch does with `prompt_on='query'`: the
    steps that follow are the steady state of every later epoch. Returns the number of documents cached."""
    if trainer.model.document_side_trainable:
        raise ValueError("doc_cache 'warm': this method trains the document side, so documents are never cached")
    docs = list(dict.fromkeys(d for e in examples for d in (e.positive, *e.negatives)))
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=trainer.autocast):
        for i in range(0, len(docs), batch_size):
            instruction = examples[0].instruction
            trainer.documents(docs[i : i + batch_size], instruction)
    return len(docs)


def _worker(args: dict) -> dict | None:
    """One method's measurement (runs in a subprocess, or in each torchrun process); rank 0 returns the result,
    with the peak memory of the rank that used most."""
    variant = METHOD_VARIANTS[args["variant"]]
    examples = fixed_length_examples(args["batch_size"] * args["nproc_per_node"] * (args["steps"] + 1),
                                     args["seq_len"])
    config = TrainingConfig(
        **variant, prompting_model=args["prompting_model"], embedding_model=args["embedding_model"],
        batch_size=args["batch_size"], max_steps=args["steps"], max_length=args["seq_len"] + 16,
        lora_rank=args["lora_rank"], output_dir=args["output_dir"], device=args["device"], do_eval=False,
        save_steps=10**9, show_progress_bar=False, save_model=False,
        grad_cache_chunk_size=args["grad_cache_chunk_size"], gradient_checkpointing=args["gradient_checkpointing"],
        overwrite=True,  # a measurement's scratch folder
    )
    trainer = Trainer(config, examples=examples)
    if args["doc_cache"] == "warm":
        fill_document_cache(trainer, examples, args["batch_size"])
    result = {"variant": args["variant"], **asdict(trainer.train())}
    distributed, is_main = trainer.distributed, trainer.is_main
    del trainer  # before the process group goes (see distributed.shutdown)
    if not distributed:
        return result
    peaks = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(peaks, result["peak_memory_mb"])
    dist_utils.shutdown()
    return {**result, "peak_memory_mb": max(peaks), "rank_peak_memory_mb": peaks} if is_main else None


def _frozen_documents(method: str) -> bool:
    return METHOD_VARIANTS[method].get("prompt_on") == "query"


def bench_train(embedding_model: str, prompting_model: str, batch_size: int, seq_len: int, steps: int,
                methods: list[str], rounds: int, lora_rank: int, output_dir: Path, device: str | None,
                console: Console, nproc_per_node: int = 1, grad_cache_chunk_size: int | None = None,
                gradient_checkpointing: bool = False, doc_cache: str = "cold") -> dict:
    """Run each method in a fresh process, `rounds` times interleaved; report medians and ratios to LoRA.

    With `nproc_per_node` > 1 each method runs under torchrun (batch_size per process); memory is the peak of
    the process that used most. On CPU, peak RSS also counts pages the C allocator kept after torch freed
    them, which inflates runs that gather and free large buffers (FSDP); `MALLOC_MMAP_THRESHOLD_=65536` in
    the environment makes glibc return them (RSS then tracks what torch holds, and steps get slower).
    `doc_cache='warm'` embeds every document once before the timed steps: the steady state of epochs after the first
    for methods whose document side is frozen (prompt_on='query'); LoRA and the other methods train their document
    side and are measured as usual.
    """
    if doc_cache not in ("cold", "warm"):
        raise ValueError(f"doc_cache must be 'cold' or 'warm', got {doc_cache!r}")
    unknown = [m for m in methods if m not in METHOD_VARIANTS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHOD_VARIANTS)}")
    sharded = [m for m in methods if METHOD_VARIANTS[m].get("fsdp")]
    if sharded and nproc_per_node < 2:
        raise ValueError(f"{sharded} shard over processes: give nproc_per_node >= 2")
    output_dir.mkdir(parents=True, exist_ok=True)
    data_dir()  # fail now, not in a subprocess, when the data is missing
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for round_index in range(rounds):
        for method in methods:
            console.print(f"[bold]round {round_index + 1}/{rounds}[/bold] {method} ...")
            args = {"variant": method, "embedding_model": embedding_model, "prompting_model": prompting_model,
                    "batch_size": batch_size, "seq_len": seq_len, "steps": steps, "lora_rank": lora_rank,
                    "output_dir": str(output_dir / f"train-{method}"), "device": device,
                    "nproc_per_node": nproc_per_node, "grad_cache_chunk_size": grad_cache_chunk_size,
                    "gradient_checkpointing": gradient_checkpointing,
                    "doc_cache": "warm" if doc_cache == "warm" and _frozen_documents(method) else "cold"}
            launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc_per_node)] \
                if nproc_per_node > 1 else []
            proc = subprocess.run([sys.executable, *launcher, "-m", "promptembedder.bench.training", json.dumps(args)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                log = output_dir / f"train-{method}.stderr.log"
                log.write_text(proc.stderr)
                raise RuntimeError(f"benchmark of {method} failed (whole log: {log}):\n{proc.stderr[-3000:]}")
            runs[method].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    summary = {}
    for method, results in runs.items():
        step = statistics.median(r["median_step_time_s"] for r in results)
        summary[method] = {"median_step_time_s": step, "examples_per_s": batch_size * nproc_per_node / step,
                           "peak_memory_mb": statistics.median(r["peak_memory_mb"] for r in results),
                           "trainable_parameters": results[0]["trainable_parameters"]}
    if "lora" in summary:
        for values in summary.values():
            values["step_time_vs_lora"] = values["median_step_time_s"] / summary["lora"]["median_step_time_s"]
            values["memory_vs_lora"] = values["peak_memory_mb"] / summary["lora"]["peak_memory_mb"]
    report = {"kind": "train", "machine": environment(dev),
              "settings": {"embedding_model": embedding_model, "prompting_model": prompting_model,
                           "batch_size": batch_size, "seq_len": seq_len, "steps": steps, "rounds": rounds,
                           "lora_rank": lora_rank, "nproc_per_node": nproc_per_node,
                           "grad_cache_chunk_size": grad_cache_chunk_size,
                           "gradient_checkpointing": gradient_checkpointing, "doc_cache": doc_cache},
              "memory_measure": "CUDA max allocated" if dev.type == "cuda" else "peak RSS of the process",
              "results": summary, "runs": runs}
    (output_dir / "bench_train.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_bars({m: {"step time (s)": v["median_step_time_s"], "peak memory (MB)": v["peak_memory_mb"]}
               for m, v in summary.items()}, output_dir / "bench_train.png",
              f"Training cost, {embedding_model}, batch {batch_size}, {seq_len} tokens ({report['machine']['device']})")
    cache = ", documents cached (steady state)" if doc_cache == "warm" else ""
    table = Table(title=f"bench train ({report['memory_measure']}{cache})")
    for column in ("method", "step (s)", "examples/s", "peak MB", "trainable", "step vs LoRA", "memory vs LoRA"):
        table.add_column(column, justify="right" if column != "method" else "left")
    for method, v in summary.items():
        ratios = [f"{v.get(key, float('nan')):.2f}x" for key in ("step_time_vs_lora", "memory_vs_lora")]
        table.add_row(method, f"{v['median_step_time_s']:.3f}", f"{v['examples_per_s']:.1f}",
                      f"{v['peak_memory_mb']:.0f}", f"{v['trainable_parameters']:,}", *ratios)
    console.print(table)
    console.print(f"written: {output_dir / 'bench_train.json'}, {output_dir / 'bench_train.png'}")
    return report


def _throughput(encode, texts: list[str], batch_size: int, repeats: int = 3) -> float:
    """Texts per second: the best of `repeats` timed passes after a warm-up pass (which fills the prompt cache)."""
    encode(texts, batch_size=batch_size)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        encode(texts, batch_size=batch_size)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def bench_encode(model: str | None, embedding_model: str, prompting_model: str, num_texts: int, batch_size: int,
                 output_dir: Path, device: str | None, console: Console) -> dict:
    """Texts per second: PromptEmbedder (prompt cached), bare backbone, sentence-transformers."""
    from ..hub.registry import resolve
    from ..models.prompt_embedder import PromptEmbedder

    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    texts = list(dict.fromkeys(s for p in load_sts("test") for s in (p.sentence1, p.sentence2)))[:num_texts]
    prompted = (PromptEmbedder.from_pretrained(model, device=dev) if model else
                PromptEmbedder(prompting_model=prompting_model, embedding_model=embedding_model, device=dev))
    reference = prompted.config.embedding_model
    bare = PromptEmbedder(embedding_model=reference, num_soft_tokens=0, device=dev).eval()
    instruction = "Retrieve semantically similar text."
    rates = {"promptembedder": _throughput(lambda t, **k: prompted.encode(t, instruction=instruction, **k), texts,
                                           batch_size),
             "bare backbone": _throughput(bare.encode, texts, batch_size)}
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(resolve(reference), device=str(dev))
        rates["sentence-transformers"] = _throughput(st.encode, texts, batch_size)
    except Exception as err:  # noqa: BLE001 - optional comparison; say why it is missing
        console.print(f"sentence-transformers comparison skipped: {err}")
    report = {"kind": "encode", "machine": environment(dev), "num_texts": len(texts), "batch_size": batch_size,
              "texts_per_s": rates,
              "prompt_overhead": rates["bare backbone"] / rates["promptembedder"] - 1}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "bench_encode.json").write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title=f"bench encode ({len(texts)} STS-B texts, batch {batch_size}, {dev})")
    table.add_column("encoder")
    table.add_column("texts/s", justify="right")
    for name, rate in rates.items():
        table.add_row(name, f"{rate:.1f}")
    console.print(table)
    console.print(f"soft-prompt overhead vs bare backbone: {report['prompt_overhead'] * 100:.1f} %")
    return report


def time_to_target(config: TrainingConfig) -> dict:
    """Train until the dev score reaches config.target_score (or max_steps); steps and wall time."""
    result = Trainer(config).train()
    return {"steps_to_target": result.steps_to_target, "seconds_to_target": result.seconds_to_target,
            "best_dev_score": result.best_dev_score, "steps_run": result.steps,
            "median_step_time_s": result.median_step_time_s}


def bench_converge(target_score: float, embedding_model: str, prompting_model: str, transfer_from: str | None,
                   transfer_model: str, max_steps: int, eval_steps: int, batch_size: int, output_dir: Path,
                   device: str | None, console: Console) -> dict:
    """Steps and seconds to a target STS-B dev score: promptembedder vs lora; transfer (W only) vs lora. Every run
    is scored at step 0 too, so a start that already meets the target counts (0 steps, 0 s)."""
    common = {"target_score": target_score, "stop_at_target": True, "max_steps": max_steps, "eval_steps": eval_steps,
              "eval_on_start": True, "batch_size": batch_size, "device": device, "save_steps": 10**9,
              "overwrite": True}  # measurement runs: a rerun replaces them
    runs = {
        "promptembedder": TrainingConfig(method="promptembedder", prompting_model=prompting_model,
                                         embedding_model=embedding_model,
                                         output_dir=str(output_dir / "converge-promptembedder"), **common),
        "lora": TrainingConfig(method="lora", embedding_model=embedding_model,
                               output_dir=str(output_dir / "converge-lora"), **common),
    }
    if transfer_from:
        runs["transfer (new W only)"] = TrainingConfig(method="promptembedder", init_from=transfer_from,
                                                       embedding_model=transfer_model,
                                                       alignment_learning_rate=TRANSFER_ALIGNMENT_LR,
                                                       output_dir=str(output_dir / "converge-transfer"), **common)
        runs[f"lora on {transfer_model}"] = TrainingConfig(method="lora", embedding_model=transfer_model,
                                                           output_dir=str(output_dir / "converge-lora-new"),
                                                           **common)
    results = {}
    for name, config in runs.items():
        console.print(f"[bold]{name}[/bold]: training to dev {target_score} ...")
        results[name] = time_to_target(config)
    report = {"kind": "converge", "machine": environment(torch.device(device or "cpu")), "target": target_score,
              "results": results}
    output_dir.mkdir(parents=True, exist_ok=True)
    # A run that meets the target at step 0 has no step time (NaN): written as null.
    (output_dir / "bench_converge.json").write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    table = Table(title=f"time to STS-B dev {target_score}")
    for column in ("run", "steps", "seconds", "best dev"):
        table.add_column(column)
    for name, r in results.items():
        reached = r["steps_to_target"] is not None
        table.add_row(name, str(r["steps_to_target"]) if reached else f">{r['steps_run']}",
                      f"{r['seconds_to_target']:.1f}" if reached else "-",
                      f"{r['best_dev_score']:.2f}" if r["best_dev_score"] is not None else "-")
    console.print(table)
    return report


if __name__ == "__main__":
    measured = _worker(json.loads(sys.argv[1]))
    if measured is not None:
        print(json.dumps(measured))
