"""The main job: the paper's regime at small scale, offline, in one table.

A small P (SmolLM2-135M-Instruct) steers a frozen raw decoder E (Gemma 3 270M, never trained to embed):

1. score the bare E (last token) and PromptEOL's hard-text prompt on the six-task subsets and the two instruction
   tests (nli-follow, unseen tasks);
2. train prompt tuning, LoRA and PromptEmbedder on E with the same multi-task data and budget; score each;
3. transfer the trained P to a second backbone E' (new W only) against LoRA and prompt tuning from scratch
   there: every run's dev score from step 0 (for the transfer: least-squares W alone), and the time each takes
   to a common dev target (`transfer_only` runs this stage alone, e.g. on another E');
4. score MiniLM (already a trained embedder) on the same subsets, for scale;
5. print one table (score per task type, % of LoRA, nli-follow, unseen tasks, trainable parameters, step time,
   peak memory; its caption states the budget), save plots and a JSON report.

Every training run is its own subprocess (`python -m promptembedder train CONFIG`), so its peak memory
is its own and a crash names the stage. The subsets are `bench.subsets` (seeded, 100-300 items per task).

The instruction tests run on smaller seeded subsets than experiments/instructions/run.py's (100 premises under two
wordings, 40 test texts per licl task, two probe draws of 8 per label), to add at most about 8 minutes to the demo's
~28 on 2 cores. `DEMO_INSTRUCTION_SIZES`: 50 e-SNLI test premises under the training wording; 10 test texts per licl
task, 60 20NG test subjects (6 training subjects per group); one probe draw of 6 per label: about 800 texts per row.
`--quick`, `QUICK_INSTRUCTION_SIZES`: 30 premises; 8 per licl task, 40 20NG; one draw of 4 per label: about 520. On
one CPU thread shared with two other jobs, a `--quick` run took 41 min, these 11 of them (93-188 s per row on E, 8 s
for MiniLM) and the rest 30 against ~10 unshared: so they add about 3.5 min to an unshared `--quick` and, at 800
texts against 520, about 5.5 min to the full demo (estimates from that ratio, not a measured full run).
Every row but the transfer stage's is scored under the tasks' own instructions (demo_table.py: what that means per
row).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from ..auto import load_embedder
from ..evaluation import TASKS
from ..models.baselines import PROMPTEOL_TEMPLATE, BackboneEmbedder
from ..models.config import CONFIG_NAME, BaselineConfig
from ..models.prompt_embedder import PromptEmbedder
from ..training import TRANSFER_ALIGNMENT_LR, TrainingConfig
from ..training.plotting import plot_bars, plot_training
from .demo_config import DemoConfig
from .demo_table import LORA_FROM_SCRATCH, LORA_ON_E, PT_FROM_SCRATCH, W_ONLY, Results, results_table, type_scores

PAPER_CLAIMS = ("paper: 96-99.8 % of LoRA's MTEB score, 40 % less GPU memory, 3.7x faster training, "
                "3.8x faster convergence on transfer")


class Stages:
    """Prints each stage with its wall time, so a long demo shows where it is."""

    def __init__(self, console: Console, total: int):
        self.console, self.total, self.index = console, total, 0

    def __call__(self, title: str):
        self.index += 1
        self.console.rule(f"[bold]stage {self.index}/{self.total}: {title}")
        return _Timer(self.console)


class _Timer:
    def __init__(self, console: Console):
        self.console = console

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.console.print(f"[dim]done in {time.perf_counter() - self.t0:.0f} s[/dim]")


def train_in_subprocess(config: TrainingConfig, console: Console) -> dict:
    """`python -m promptembedder train` on a written config; returns its train_summary.json."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "demo_training_config.json"
    path.write_text(json.dumps(asdict(config), indent=2) + "\n")
    proc = subprocess.run([sys.executable, "-m", "promptembedder", "train", str(path)], stdout=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"training in {out} failed (exit {proc.returncode}); see the output above")
    summary = json.loads((out / "train_summary.json").read_text())
    dev = summary.get("best_dev_score")
    console.print(f"{config.method} on {config.embedding_model}: {summary['steps']} steps, "
                  f"{summary['median_step_time_s']:.2f} s/step" + (f", best dev {dev:.2f}" if dev is not None else ""))
    return summary


def first_step_reaching(log: Path, target: float) -> tuple[int, float] | None:
    """(step, elapsed seconds) of the first dev evaluation at or above target (the log keeps 3 decimals)."""
    with open(log, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["dev_score"] and float(row["dev_score"]) >= round(target, 3):
                return int(row["step"]), float(row["elapsed_s"])
    return None


def dev_at_start(log: Path) -> float | None:
    """The dev score logged at step 0 (`eval_on_start`), if any."""
    with open(log, newline="") as handle:
        return next((float(r["dev_score"]) for r in csv.DictReader(handle) if r["step"] == "0" and r["dev_score"]),
                    None)


def _common(config: DemoConfig) -> dict:
    """The training settings every demo run shares (the demo reproduces its own runs: a rerun replaces them)."""
    return {"train_data": list(config.train_data), "task_weights": dict.fromkeys(config.train_data, 1.0),
            "seed": config.seed, "batch_size": config.batch_size, "max_length": config.max_length,
            "device": config.device, "show_progress_bar": True, "overwrite": True}


def source_model(config: DemoConfig) -> Path:
    """The PromptEmbedder the demo trained on E, whose P the transfer stage reuses."""
    return Path(config.output_dir) / "promptembedder" / "final"


def run_demo(config: DemoConfig, console: Console) -> dict:
    """Every stage; with `transfer_only`, the transfer stage alone, from the P a finished demo trained."""
    if config.transfer_only:
        return run_transfer_only(config, console)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = Stages(console, 5 if config.reference_model else 4)
    results = Results(console)
    E = config.embedding_model
    with stage(f"score the bare {E} (last token) and PromptEOL's hard-text prompt"):
        for name, options in (("bare E, last token", {}), ("PromptEOL hard-text prompt",
                                                            {"template": PROMPTEOL_TEMPLATE})):
            model = BackboneEmbedder(BaselineConfig(method="bare", embedding_model=E, pooling="last",
                                                    max_length=config.max_length, **options), device=config.device)
            results.score(name, model, E, instructions=False, tasks=config.tasks,
                          instruction_sizes=config.instruction_sizes)
            results.costs[name] = {"trainable": 0}
            del model

    main = {"max_steps": config.steps, "save_steps": config.steps, "do_eval": False, "embedding_model": E,
            **_common(config)}
    runs = {
        "prompt tuning (static suffix)": TrainingConfig(method="prompt-tuning", prompt_position="suffix",
                                                        output_dir=str(out / "prompt-tuning"), **main),
        LORA_ON_E: TrainingConfig(method="lora", output_dir=str(out / "lora"), **main),
        "PromptEmbedder": TrainingConfig(method="promptembedder", prompting_model=config.prompting_model,
                                         output_dir=str(out / "promptembedder"), **config.promptembedder, **main),
    }
    with stage(f"train prompt tuning, LoRA and PromptEmbedder (P={config.prompting_model}) on "
               f"{', '.join(config.train_data)}: {config.steps} steps x {config.batch_size}, "
               f"{config.max_length} tokens"):
        for name, cfg in runs.items():
            results.costs[name] = _costs(train_in_subprocess(cfg, console))
            model = load_embedder(Path(cfg.output_dir) / "final", device=config.device)
            if isinstance(model, PromptEmbedder):  # what P says, read through its closest tokens
                for task in config.tasks:
                    console.print(f"P's prompt for {task}: {model.decode_prompt(TASKS[task].instruction)!r}")
            results.score(name, model, E, instructions=cfg.method != "prompt-tuning", tasks=config.tasks,
                          instruction_sizes=config.instruction_sizes)
            del model

    with stage(f"transfer P to {config.transfer_model} (a new W only) against LoRA and prompt tuning from scratch"):
        transfer = run_transfer(config, source_model(config), results)

    if config.reference_model:
        with stage(f"score {config.reference_model} (already a trained embedder) on the same subsets, for scale"):
            model = load_embedder(config.reference_model, device=config.device, max_length=config.max_length)
            name = f"{config.reference_model}, bare"
            results.score(name, model, config.reference_model, instructions=False, tasks=config.tasks,
                          instruction_sizes=config.instruction_sizes)
            results.costs[name] = {"trainable": 0}
            del model

    console.print(results_table(results, config, config.tasks))
    console.print(PAPER_CLAIMS)
    plot_training({name: Path(cfg.output_dir) / "log.csv" for name, cfg in runs.items()},
                  out / "training_curves.png", title=f"frozen {E}")
    plot_bars({name: type_scores(results.scores[name]) for name in results.scores
               if set(results.scores[name]) == set(config.tasks)},
              out / "scores_by_task_type.png", title="main score x100 on the subsets")
    return write_report(out / "demo_results.json", config, results, transfer, f"three plots in {out}")


def run_transfer_only(config: DemoConfig, console: Console) -> dict:
    """Stage 3 alone on `transfer_model`, e.g. a second E' for the P a finished demo trained; its own report."""
    source = source_model(config)
    if not (source / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{source}: no trained PromptEmbedder to transfer; run the whole demo with "
                                f"--output-dir {config.output_dir} first (its stage 2 trains P)")
    results = Results(console)
    console.rule(f"[bold]transfer P to {config.transfer_model} (a new W only) against LoRA and prompt tuning "
                 "from scratch")
    transfer = run_transfer(config, source, results)
    console.print(results_table(results, config, config.transfer_tasks))
    folder = Path(transfer["folder"])
    return write_report(folder / "transfer_results.json", config, results, transfer,
                        str(folder / "transfer_curves.png"))


def write_report(path: Path, config: DemoConfig, results: Results, transfer: dict, plots: str) -> dict:
    """The transfer's speed-up against the paper's, then the JSON report (settings, scores, costs, transfer)."""
    results.console.print(f"transfer to the common dev target: {transfer['speedup_vs_lora']['words']} "
                          "(paper: 3.8x LoRA's speed)")
    report = {"config": asdict(config), "scores": results.scores, "instruction_scores": results.instructed,
              "backbones": results.backbones, "costs": results.costs, "transfer": transfer}
    path.write_text(json.dumps(report, indent=2) + "\n")
    results.console.print(f"written: {path} and {plots}")
    return report


def run_transfer(config: DemoConfig, source: Path, results: Results) -> dict:
    """W-only transfer of `source`'s P to E' against LoRA and prompt tuning from scratch there, each scored on dev
    from step 0 (the transferred start is a reading, and a candidate for `best/`): the dev score at step 0, each
    run's best, and the steps and seconds each takes to a common target and to LoRA's best."""
    console, E2 = results.console, config.transfer_model
    folder = Path(config.output_dir) / f"transfer-{Path(E2).name}"
    transfer = {"max_steps": config.transfer_steps, "save_steps": config.transfer_steps, "do_eval": True,
                "eval_on_start": True, "eval_steps": config.transfer_eval_steps,
                "eval_max_pairs": config.transfer_eval_pairs, "embedding_model": E2, **_common(config)}
    runs = {
        W_ONLY: TrainingConfig(method="promptembedder", init_from=str(source), output_dir=str(folder / "w-only"),
                               alignment_learning_rate=TRANSFER_ALIGNMENT_LR, **transfer),
        LORA_FROM_SCRATCH: TrainingConfig(method="lora", output_dir=str(folder / "lora"), **transfer),
        PT_FROM_SCRATCH: TrainingConfig(method="prompt-tuning", output_dir=str(folder / "prompt-tuning"), **transfer),
    }
    summaries = {}
    for name, cfg in runs.items():
        summaries[name] = summary = train_in_subprocess(cfg, console)
        results.costs[name] = _costs(summary)
        model = load_embedder(Path(cfg.output_dir) / "best", device=config.device)
        results.score(name, model, E2, instructions=cfg.method != "prompt-tuning", tasks=config.transfer_tasks)
        del model
    logs = {name: Path(cfg.output_dir) / "log.csv" for name, cfg in runs.items()}
    step0 = {name: dev_at_start(log) for name, log in logs.items()}
    console.print("dev at step 0, before any training: " + "; ".join(
        f"{name}: {value:.2f}" for name, value in step0.items()))
    target = min(summary["best_dev_score"] for summary in summaries.values())
    lora_target = summaries[LORA_FROM_SCRATCH]["best_dev_score"]
    reached = {name: first_step_reaching(log, target) for name, log in logs.items()}
    reached_lora = {name: first_step_reaching(log, lora_target) for name, log in logs.items()}
    for label, value, hits in (("common dev target (the best every run reaches)", target, reached),
                               ("LoRA's best dev", lora_target, reached_lora)):
        console.print(f"{label}: {value:.2f}; " + "; ".join(
            f"{name}: " + (f"step {hit[0]}, {hit[1]:.0f} s" if hit else "not reached") for name, hit in hits.items()))
    plot_training(logs, folder / "transfer_curves.png", title=f"transfer to {E2}")
    return {"model": E2, "folder": str(folder), "step0_dev": step0, "best_dev": {
        name: summary["best_dev_score"] for name, summary in summaries.items()}, "target": target,
        "reached": reached, "speedup_vs_lora": speedup(reached), "lora_target": lora_target,
        "reached_lora_target": reached_lora, "speedup_to_lora_target": speedup(reached_lora)}


def speedup(reached: dict[str, tuple[int, float] | None]) -> dict:
    """LoRA's seconds to a target over the W-only transfer's (the paper's 3.8x), with what it means in words
    (JSON has no infinity); the value is None unless both reach it after some training (a ratio with a zero is
    no speed-up, so the words say who met it at step 0)."""
    lora, moved = reached.get(LORA_FROM_SCRATCH), reached.get(W_ONLY)
    if not (lora and moved):
        return {"value": None, "words": "not reached by both runs"}
    if moved[1] == 0:
        words = "both met it at step 0, before any training" if lora[1] == 0 else \
            "the transfer met it at step 0, before any training"
        return {"value": None, "words": words}
    if lora[1] == 0:
        return {"value": None, "words": f"LoRA met it at step 0, before any training; the transfer at step "
                                        f"{moved[0]} ({moved[1]:.0f} s)"}
    ratio = lora[1] / moved[1]
    return {"value": ratio, "words": f"{ratio:.2f}x LoRA's speed"}


def _costs(summary: dict) -> dict:
    return {"trainable": summary["trainable_parameters"], "step_s": summary["median_step_time_s"],
            "peak_mb": summary["peak_memory_mb"]}
