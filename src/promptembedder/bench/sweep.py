"""A training-cost sweep: several batch / GradCache configurations of each method, one process per method.

`bench train` starts a process per measurement, which is right for small models; with a 7B E every process start
costs seconds of model building, so here each method's model is built once and every configuration reuses it
(`torch.cuda.reset_peak_memory_stats` in between; an out-of-memory configuration is reported, not fatal). For
PromptEmbedder it also measures the steady state (documents from the warm cache, as from the second epoch on with
`prompt_on='query'`), synchronised phase timings of a step and a torch.profiler table of one step. Texts are
synthetic words, so an architecture-only model (`arch:mistral-7b`) needs no data set and every text has exactly
`seq_len` tokens.
"""

from __future__ import annotations

import gc
import json
import random
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from ..data.datasets import TrainExample
from ..environment import environment
from ..training import Trainer, TrainingConfig, build_model
from .sweep_report import sweep_markdown
from .training import METHOD_VARIANTS, fill_document_cache

INSTRUCTION = "Retrieve semantically similar text."
PHASES = ("generation", "E documents (no graph)", "E queries (prompted)", "loss + backward", "optimizer")


def parse_configs(spec: str) -> list[tuple[int, int | None]]:
    """'8,16,32:8' -> [(8, None), (16, None), (32, 8)]: batch size, optionally ':' GradCache chunk size."""
    configs = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        batch, _, chunk = item.partition(":")
        try:
            configs.append((int(batch), int(chunk) if chunk else None))
        except ValueError as err:
            raise ValueError(f"--configs: {item!r} is not BATCH or BATCH:CHUNK (e.g. 8,16,32:8)") from err
    if not configs:
        raise ValueError("--configs: give at least one batch size")
    return configs


def synthetic_examples(count: int, seq_len: int, seed: int = 0, instructions: tuple[str, ...] = (INSTRUCTION,),
                       batch: int = 1) -> list[TrainExample]:
    """Triplets of distinct texts of `seq_len` random common words (one token each for an `arch:` tokenizer), the
    instructions taken in turn, one per `batch` examples (a batch holds one instruction)."""
    from ..models.architectures import WORDS

    rng = random.Random(seed)
    text = lambda: " ".join(rng.choices(WORDS, k=seq_len))  # noqa: E731
    return [TrainExample(text(), text(), (text(),), instructions[i // batch % len(instructions)])
            for i in range(count)]


def instructions_for(variant: dict) -> tuple[str, ...]:
    """One instruction, or with the prompt-diversity term the six tasks' five distinct ones, so that each step's
    prompt has others to be kept apart from."""
    if not variant.get("prompt_diversity"):
        return (INSTRUCTION,)
    from ..evaluation import TASKS

    return tuple(dict.fromkeys(spec.instruction for spec in TASKS.values()))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _memory(device: torch.device) -> dict:
    if device.type != "cuda":
        import resource

        return {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20}


def _fresh(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def split_method(name: str) -> tuple[dict, bool]:
    """'lora' or 'lora+gc' (with gradient checkpointing of E) -> the bench variant and the checkpointing switch."""
    base = name.removesuffix("+gc")
    if base not in METHOD_VARIANTS or METHOD_VARIANTS[base].get("fsdp"):
        choices = [m for m, v in METHOD_VARIANTS.items() if not v.get("fsdp")]
        raise ValueError(f"unknown method {name!r}; choose from {choices}, each optionally with '+gc' (gradient "
                         "checkpointing of E)")
    return dict(METHOD_VARIANTS[base]), name.endswith("+gc")


def _trainer(args: dict, model, variant: dict, batch: int, chunk: int | None, examples) -> Trainer:
    config = TrainingConfig(**variant, batch_size=batch, gradient_checkpointing=args["gradient_checkpointing"],
                            max_steps=len(examples) // batch, max_length=args["seq_len"] + 16, device=args["device"],
                            output_dir=str(Path(args["output_dir"], "trainer")), do_eval=False, save_model=False,
                            save_steps=10**9, logging_steps=10**9, show_progress_bar=False,
                            grad_cache_chunk_size=chunk, warmup_ratio=0.0, overwrite=True)
    return Trainer(config, model=model, examples=examples)


def measure(args: dict, model, variant: dict, batch: int, chunk: int | None, warm_cache: bool) -> dict:
    """Median synchronised step time of `steps` steps after `warmup`, and peak memory, of one configuration."""
    device = torch.device(args["device"])
    steps = args["warmup"] + args["steps"]
    examples = synthetic_examples(batch * steps, args["seq_len"], seed=batch, instructions=instructions_for(variant),
                                  batch=batch)
    _fresh(device)
    trainer = _trainer(args, model, variant, batch, chunk, examples)
    if warm_cache:  # the documents of every step embedded once before, as in any epoch after the first
        fill_document_cache(trainer, examples, batch)
    between: list[float] = []
    stamps = [time.perf_counter()]

    def record(args, state, control):
        _sync(device)
        stamps.append(time.perf_counter())
        if device.type == "cuda":
            between.append(torch.cuda.memory_allocated(device) / 2**20)

    trainer.add_callback(record)
    _sync(device)
    stamps[0] = time.perf_counter()
    trainer.train()
    times = [b - a for a, b in zip(stamps, stamps[1:], strict=False)][args["warmup"] :]
    del trainer
    result = {"step_s": statistics.median(times), "step_times_s": times, **_memory(device)}
    if between:
        result["allocated_between_steps_mb"] = between[-1]
    return result


def phase_profile(args: dict, model, batch: int, variant: dict) -> dict:
    """PromptEmbedder with prompt_on='query' (`variant`: E reading once or not), no GradCache: synchronised time and
    memory of each phase of a step (median over the timed steps), then a torch.profiler table of one more step."""
    device = torch.device(args["device"])
    steps = args["warmup"] + args["steps"]
    examples = synthetic_examples(batch * (steps + 1), args["seq_len"], seed=10_000 + batch)
    _fresh(device)
    trainer = _trainer(args, model, variant, batch, None, examples)
    model.train()
    cuda = device.type == "cuda"
    timings: dict[str, list[float]] = {p: [] for p in PHASES}
    memory: dict[str, float] = {}

    def one_step(index: int, label=lambda name: nullcontext()) -> None:
        part = examples[index * batch : (index + 1) * batch]
        queries, docs = [e.query for e in part], [d for e in part for d in (e.positive, *e.negatives)]
        marks = [time.perf_counter()]

        def mark(name: str) -> None:
            _sync(device)
            marks.append(time.perf_counter())
            timings[name].append(marks[-1] - marks[-2])
            if cuda:
                memory[f"after {name} (MB)"] = torch.cuda.memory_allocated(device) / 2**20

        if cuda:
            memory["step start (MB)"] = torch.cuda.memory_allocated(device) / 2**20
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=trainer.autocast):
            with label("generation"):
                prompt, _, _ = model.training_context(trainer.wrapped, INSTRUCTION)
            mark("generation")
            with label("E documents"):
                doc_vectors = trainer.documents(docs, INSTRUCTION)
            mark("E documents (no graph)")
            with label("E queries"):
                q = model.embed_in_context(trainer.wrapped, queries, "query", prompt, INSTRUCTION)
            mark("E queries (prompted)")
        with label("loss + backward"):
            trainer.loss.info_nce(q, doc_vectors, len(part)).backward()
        mark("loss + backward")
        with label("optimizer"):
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
        mark("optimizer")

    for index in range(steps):
        one_step(index)
    result = {"batch_size": batch, "phases_s": {p: statistics.median(v[args["warmup"] :]) for p, v in timings.items()},
              "memory": memory}
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        one_step(steps, record_function)
    _sync(device)
    events = prof.key_averages()
    sort = "self_cpu_time_total"
    if cuda:
        sort = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    table = events.table(sort_by=sort, row_limit=40)
    Path(args["output_dir"], "profile_step.txt").write_text(f"one PromptEmbedder-query step, batch {batch}, "
                                                            f"sorted by {sort}\n{table}\n")
    result["profile_events"] = len(events)
    result["profile_kernel_launches"] = sum(e.count for e in events if e.key.startswith(("cudaLaunchKernel",
                                                                                             "cuLaunchKernel")))
    return result


def worker(args: dict) -> None:
    """One method, every configuration; appends one JSON line per result to args['results'] as it goes."""
    device = torch.device(args["device"])
    variant, args["gradient_checkpointing"] = split_method(args["method"])
    sink = Path(args["results"])

    def emit(record: dict) -> None:
        with sink.open("a") as handle:
            handle.write(json.dumps({"method": args["method"], **record}) + "\n")

    torch.manual_seed(0)
    start = time.perf_counter()
    config = TrainingConfig(**variant, prompting_model=args["prompting_model"], embedding_model=args["embedding_model"],
                            max_length=args["seq_len"] + 16, lora_rank=args["lora_rank"], device=args["device"])
    model = build_model(config, device).to(device)
    e_bytes = sum(p.numel() * p.element_size() for p in model.backbone.model.parameters() if not p.requires_grad)
    emit({"kind": "model", "build_s": time.perf_counter() - start, "frozen_e_weights_mb": e_bytes / 2**20,
          "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)})
    cached = not model.document_side_trainable
    runs = [(b, c, False) for b, c in args["configs"]] + ([(b, c, True) for b, c in args["configs"]] if cached else [])
    for batch, chunk, warm in runs:
        record = {"kind": "step", "batch_size": batch, "grad_cache_chunk_size": chunk, "doc_cache": "warm" if warm
                  else "cold"}
        try:
            record.update(measure(args, model, variant, batch, chunk, warm))
        except torch.cuda.OutOfMemoryError as err:
            record["error"] = f"out of memory: {str(err).splitlines()[0]}"
        model.zero_grad(set_to_none=True)  # an interrupted step leaves gradients behind
        _fresh(device)
        emit(record)
    profiled = model.__class__.__name__ == "PromptEmbedder" and cached and not variant.get("prompt_diversity")
    if args["profile"] and profiled:
        try:
            emit({"kind": "phases", **phase_profile(args, model, args["configs"][0][0], variant)})
        except Exception as err:  # noqa: BLE001 - OOM or a profiler failure must not lose the step table
            emit({"kind": "phases", "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"})


def run_sweep(embedding_model: str, prompting_model: str, methods: list[str], configs: list[tuple[int, int | None]],
              seq_len: int, warmup: int, steps: int, lora_rank: int, output_dir: Path, device: str | None,
              profile: bool = True) -> dict:
    """Each method in its own process over every configuration; returns (and writes) the report."""
    for method in methods:
        split_method(method)
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    output_dir.mkdir(parents=True, exist_ok=True)
    results_path = output_dir / "sweep_results.jsonl"
    results_path.write_text("")
    failures = {}
    for method in methods:
        args = {"method": method, "embedding_model": embedding_model, "prompting_model": prompting_model,
                "configs": configs, "seq_len": seq_len, "warmup": warmup, "steps": steps, "lora_rank": lora_rank,
                "device": str(dev), "output_dir": str(output_dir / method), "results": str(results_path),
                "profile": profile}
        Path(args["output_dir"]).mkdir(parents=True, exist_ok=True)
        print(f"[sweep] {method}: {len(configs)} configurations ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, "-m", "promptembedder.bench.sweep", json.dumps(args)],
                              capture_output=True, text=True)
        (output_dir / f"{method}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:  # what it measured before it died is already in the results file
            failures[method] = proc.stderr[-2000:]
            print(f"[sweep] {method} failed (log: {output_dir / f'{method}.log'}):\n{proc.stderr[-1500:]}",
                  file=sys.stderr)
    records = [json.loads(line) for line in results_path.read_text().splitlines() if line.strip()]
    report = {"kind": "sweep", "machine": environment(dev),
              "settings": {"embedding_model": embedding_model, "prompting_model": prompting_model,
                           "methods": methods, "configs": configs, "seq_len": seq_len, "warmup": warmup,
                           "steps": steps, "lora_rank": lora_rank, "texts": "synthetic triplets",
                           "autocast": "bf16" if dev.type == "cuda" else "none"},
              "memory_measure": "CUDA max allocated" if dev.type == "cuda" else "peak RSS of the process",
              "records": records, "failures": failures}
    (output_dir / "sweep.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = sweep_markdown(report)
    (output_dir / "sweep.md").write_text(markdown)
    return report


if __name__ == "__main__":
    worker(json.loads(sys.argv[1]))
