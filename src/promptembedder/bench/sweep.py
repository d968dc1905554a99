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
                prompt, _ = model.training_context(trainer.wrapped, INSTRUCTION)
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


def _cell(record: dict | None) -> str:
    if record is None:
        return "–"
    if "error" in record:
        return "OOM" if record["error"].startswith("out of memory") else "failed"
    return f"{record['step_s']:.3f} s, {record['peak_memory_mb'] / 1024:.1f} GB"


def _pair_rows(steps: dict, frozen: dict, configs: list, pe: str, base: str, label: str, path: str) -> list[str]:
    rows = []
    for batch, chunk in configs:
        a, b = steps.get((pe, batch, chunk, "cold")), steps.get((base, batch, chunk, "cold"))
        warm = steps.get((pe, batch, chunk, "warm"))
        if a is None and b is None:
            continue
        ok = a is not None and b is not None and "error" not in a and "error" not in b
        ratio = f"{a['step_s'] / b['step_s']:.2f}x" if ok else "–"
        memory = f"{a['peak_memory_mb'] / b['peak_memory_mb']:.2f}x" if ok else "–"
        above = "–"
        if ok and pe in frozen and base in frozen:
            above = f"{(a['peak_memory_mb'] - frozen[pe]) / (b['peak_memory_mb'] - frozen[base]):.2f}x"
        steady_ok = warm is not None and b is not None and "error" not in warm and "error" not in b
        steady = f"{warm['step_s'] / b['step_s']:.2f}x" if steady_ok else "–"
        rows.append(f"| {batch} | {chunk or '–'} | {label} | {path} | {ratio} | {memory} | {above} | {_cell(b)} "
                    f"| {_cell(a)} | {_cell(warm)} | {steady} |")
    return rows


def _diversity_rows(steps: dict, configs: list) -> list[str]:
    """What the prompt-diversity term adds to a PE-query step (cold document cache), where both were measured."""
    rows = []
    for batch, chunk in configs:
        plain = steps.get(("promptembedder-query", batch, chunk, "cold"))
        diverse = steps.get(("promptembedder-query-diversity", batch, chunk, "cold"))
        if plain is None or diverse is None:
            continue
        ok = "error" not in plain and "error" not in diverse
        ratios = [f"{diverse[k] / plain[k]:.2f}x" if ok else "–" for k in ("step_s", "peak_memory_mb")]
        rows.append(f"| {batch} | {chunk or '–'} | {_cell(plain)} | {_cell(diverse)} | {' | '.join(ratios)} |")
    if not rows:
        return []
    return ["", "The prompt-diversity term (`prompt_diversity`: each step also generates P's prompts for 3 other "
            "instructions) against the same PE-query step without it:", "",
            "| batch | GradCache chunk | PE-query step, peak | with the term | step ratio | memory ratio |",
            "|---|---|---|---|---|---|", *rows]


def sweep_markdown(report: dict) -> str:
    """The issue's table: PromptEmbedder (query) vs LoRA per configuration (and both with E checkpointed, where
    measured), the steady state, the phases."""
    records, settings = report["records"], report["settings"]
    steps = {(r["method"], r["batch_size"], r["grad_cache_chunk_size"], r["doc_cache"]): r
             for r in records if r["kind"] == "step"}
    frozen = {r["method"]: r["frozen_e_weights_mb"] for r in records if r["kind"] == "model"}
    machine = report["machine"]
    lines = [f"# Training-cost sweep: E = {settings['embedding_model']}, P = {settings['prompting_model']}",
             "", f"{machine.get('gpu', machine['device'])}, torch {machine['libraries']['torch']}, "
             f"{settings['seq_len']} tokens per text, triplets, {settings['warmup']} warm-up + {settings['steps']} "
             f"timed steps (median), memory = {report['memory_measure']}, autocast {settings['autocast']}.", "",
             "| batch | GradCache chunk | E checkpointed | E's path | PE-query step vs LoRA | memory vs LoRA | memory "
             "above E's weights vs LoRA | LoRA step, peak | PE-query step, peak | PE-query steady state (docs cached) "
             "| steady vs LoRA |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    # A checkpointed E always runs the full forward (backbone.can_read_once).
    for pe, base, label, path in (("promptembedder-query", "lora", "no", "read once"),
                                  ("promptembedder-query-no-read-once", "lora", "no", "full"),
                                  ("promptembedder-query+gc", "lora+gc", "yes", "full")):
        lines += _pair_rows(steps, frozen, settings["configs"], pe, base, label, path)
    lines += _diversity_rows(steps, settings["configs"])
    for phases in (r for r in records if r["kind"] == "phases" and "phases_s" in r):
        lines += ["", f"Where a batch-{phases['batch_size']} {phases['method']} step goes (synchronised, median):",
                  "", "| phase | time |", "|---|---|"]
        lines += [f"| {name} | {seconds:.4f} s |" for name, seconds in phases["phases_s"].items()]
        total = sum(phases["phases_s"].values())
        lines += ["", f"P's generation: {phases['phases_s']['generation'] / total:.0%} of the step."]
        if phases.get("memory"):
            lines += ["", "Allocated memory during that step: " + ", ".join(
                f"{k} {v / 1024:.2f} GB" for k, v in phases["memory"].items()) + "."]
    if report["failures"]:
        lines += ["", "Failed methods: " + ", ".join(report["failures"]) + " (see their .log files)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    worker(json.loads(sys.argv[1]))
