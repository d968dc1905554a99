"""The main job: reproduce the paper's claims at small scale, offline, and print one table.

1. score the bare backbone and a hard-text instruction on STS-B test and SICK-R;
2. train PromptEmbedder and the LoRA baseline on the same real data with the same budget;
3. transfer the trained P to a second backbone (new W only) and compare with LoRA from scratch there;
4. print one table (score, % of LoRA, trainable parameters, step time, peak memory) and save plots.

Every training run is its own subprocess (`python -m promptembedder train CONFIG`), so its peak memory
is its own and a crash names the stage.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .auto import load_embedder
from .baselines import BackboneEmbedder
from .config import BaselineConfig
from .data import NLI_INSTRUCTION, STS_INSTRUCTION
from .evaluation import evaluate
from .model import PromptEmbedder
from .plotting import plot_training
from .training import TRANSFER_ALIGNMENT_LR, TrainingConfig

PAPER_CLAIMS = "paper: 96-99.8 % of LoRA's MTEB score, 40 % less GPU memory, 3.7x faster training, 3.8x faster transfer"


@dataclass
class DemoConfig:
    output_dir: str = "runs/demo"
    prompting_model: str = TrainingConfig.prompting_model
    embedding_model: str = TrainingConfig.embedding_model
    transfer_model: str = "gemma3-270m"
    steps: int = 100
    batch_size: int = 32
    eval_steps: int = 25
    transfer_steps: int = 30
    transfer_batch_size: int = 16
    transfer_eval_steps: int = 10
    transfer_eval_pairs: int = 300
    tasks: tuple[str, ...] = ("sts-b", "sick-r")
    transfer_tasks: tuple[str, ...] = ("sts-b",)
    device: str = "cpu"

    @classmethod
    def preset(cls, quick: bool, **kwargs) -> DemoConfig:
        if quick:
            kwargs = {"steps": 30, "batch_size": 16, "eval_steps": 15, "transfer_steps": 12, "transfer_batch_size": 8,
                      "transfer_eval_steps": 4, "transfer_eval_pairs": 150, **kwargs}
        return cls(**kwargs)


class Stages:
    """Prints each stage with its wall time, so a long demo shows where it is."""

    def __init__(self, console: Console, total: int):
        self.console, self.total, self.index, self.start = console, total, 0, time.perf_counter()

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
    console.print(f"{config.method} on {config.embedding_model}: {summary['steps']} steps, "
                  f"{summary['median_step_time_s']:.2f} s/step, best dev {summary['best_dev_score']:.2f}")
    return summary


def first_step_reaching(log: Path, target: float) -> tuple[int, float] | None:
    """(step, elapsed seconds) of the first dev evaluation at or above target (the log keeps 3 decimals)."""
    for row in csv.DictReader(open(log, newline="")):  # noqa: SIM115
        if row["dev_score"] and float(row["dev_score"]) >= round(target, 3):
            return int(row["step"]), float(row["elapsed_s"])
    return None


def run_demo(config: DemoConfig, console: Console) -> dict:
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = Stages(console, 5)
    tasks = config.tasks
    scores: dict[str, dict] = {}
    rows: dict[str, dict] = {}

    with stage(f"score the bare backbone ({config.embedding_model}) and a hard-text instruction"):
        bare = PromptEmbedder(embedding_model=config.embedding_model, num_soft_tokens=0, device=config.device)
        scores["bare backbone"] = evaluate(bare, tasks, instructions=dict.fromkeys(tasks, None), batch_size=128)
        hard = BackboneEmbedder(BaselineConfig(method="hard-text", embedding_model=config.embedding_model),
                                device=config.device)
        scores["hard-text instruction"] = evaluate(hard, tasks, batch_size=128)
        del bare, hard
        for name in ("bare backbone", "hard-text instruction"):
            rows[name] = {"trainable": 0}

    common = {"train_data": ["snli", "sts-train"], "max_steps": config.steps, "batch_size": config.batch_size,
              "eval_steps": config.eval_steps, "save_steps": config.steps, "device": config.device,
              "overwrite": True}  # the demo reproduces its own runs: a rerun replaces them
    runs = {
        "promptembedder": TrainingConfig(method="promptembedder", prompting_model=config.prompting_model,
                                         embedding_model=config.embedding_model,
                                         output_dir=str(out / "promptembedder"), **common),
        "lora": TrainingConfig(method="lora", embedding_model=config.embedding_model, output_dir=str(out / "lora"),
                               **common),
    }
    summaries = {}
    with stage(f"train PromptEmbedder (P={config.prompting_model}, K=5) and LoRA on SNLI + STS-B train, "
               f"{config.steps} steps x {config.batch_size}"):
        for name, cfg in runs.items():
            summaries[name] = train_in_subprocess(cfg, console)
            model = load_embedder(out / name / "best", device=config.device)
            scores[name] = evaluate(model, tasks, batch_size=128)
            if name == "promptembedder":
                prompts = {instr: model.decode_prompt(instr) for instr in (STS_INSTRUCTION, NLI_INSTRUCTION)}
            del model

    transfer_common = {**common, "max_steps": config.transfer_steps, "eval_steps": config.transfer_eval_steps,
                       "batch_size": config.transfer_batch_size,
                       "alignment_learning_rate": TRANSFER_ALIGNMENT_LR,
                       "save_steps": config.transfer_steps, "eval_max_pairs": config.transfer_eval_pairs,
                       "embedding_model": config.transfer_model}
    transfer_runs = {
        "transfer: new W only": TrainingConfig(method="promptembedder", init_from=str(out / "promptembedder" / "best"),
                                               output_dir=str(out / "transfer"), **transfer_common),
        "lora from scratch": TrainingConfig(method="lora", output_dir=str(out / "transfer-lora"), **transfer_common),
    }
    with stage(f"transfer P to {config.transfer_model} as a frozen embedder (train W only) vs LoRA there"):
        for name, cfg in transfer_runs.items():
            summaries[name] = train_in_subprocess(cfg, console)
            model = load_embedder(Path(cfg.output_dir) / "best", device=config.device)
            scores[name] = evaluate(model, config.transfer_tasks, batch_size=64)
            del model

    with stage("time to the same dev score on the new backbone (the 3.8x claim)"):
        logs = {name: Path(cfg.output_dir) / "log.csv" for name, cfg in transfer_runs.items()}
        target = min(summaries[name]["best_dev_score"] for name in transfer_runs)
        reached = {name: first_step_reaching(log, target) for name, log in logs.items()}
        console.print(f"target: dev {target:.2f} (the best score both runs reach)")
        for name, hit in reached.items():
            console.print(f"{name}: step {hit[0]}, {hit[1]:.0f} s" if hit else f"{name}: not reached")

    with stage("results"):
        for name, summary in summaries.items():
            rows[name] = {"trainable": summary["trainable_parameters"], "step_s": summary["median_step_time_s"],
                          "peak_mb": summary["peak_memory_mb"]}
        table = results_table(scores, rows, config)
        console.print(table)
        console.print(PAPER_CLAIMS)
        console.print("decoded soft prompts (argmax tokens of P's relaxed distributions):")
        for instruction, text in prompts.items():
            console.print(f"  {instruction!r} -> {text!r}")
        plot_training({name: Path(cfg.output_dir) / "log.csv" for name, cfg in runs.items()},
                      out / "training_curves.png", title=f"{config.embedding_model}")
        plot_training(logs, out / "transfer_curves.png", title=f"transfer to {config.transfer_model}")
        report = {"config": asdict(config), "scores": scores, "costs": rows, "decoded_prompts": prompts,
                  "transfer_target": target, "transfer_reached": reached}
        (out / "demo_results.json").write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"written: {out / 'demo_results.json'}, {out / 'training_curves.png'}, "
                      f"{out / 'transfer_curves.png'}")
    return report


def results_table(scores: dict[str, dict], costs: dict[str, dict], config: DemoConfig) -> Table:
    """Score, % of LoRA (on the same backbone), trainable parameters, step time and peak memory."""
    table = Table(title="PromptEmbedder demo (Spearman x100, test splits)")
    for column in ("model", "backbone", "STS-B", "SICK-R", "% of LoRA", "trainable", "s/step", "peak MB"):
        table.add_column(column, justify="left" if column in ("model", "backbone") else "right")

    def average(name: str) -> float:
        values = [scores[name][t]["spearman"] for t in scores[name]]
        return sum(values) / len(values)

    for name in scores:
        transfer = name in ("transfer: new W only", "lora from scratch")
        lora = "lora from scratch" if transfer else "lora"
        share = f"{100 * average(name) / average(lora):.1f}" if lora in scores else "-"
        cost = costs.get(name, {})
        table.add_row(
            name, config.transfer_model if transfer else config.embedding_model,
            f"{scores[name]['sts-b']['spearman']:.2f}",
            f"{scores[name]['sick-r']['spearman']:.2f}" if "sick-r" in scores[name] else "-",
            share, f"{cost.get('trainable', 0):,}",
            f"{cost['step_s']:.2f}" if "step_s" in cost else "-",
            f"{cost['peak_mb']:.0f}" if "peak_mb" in cost else "-",
        )
    return table
