"""The small-budget experiments of experiments/regime/LOG.md: a raw frozen decoder E steered by a small P.

Every variant trains on the same data (the project's `snli` triplets + STS-B train pairs >= 4), for the same
steps and batch size, with the same short max_length, then scores on the same seeded subsets of STS-B test and
SICK-R. One JSON line per run goes to `--results`; a run already there is skipped, so the queue can be restarted.

    python experiments/regime/regime.py ablation --results runs.jsonl --runs-dir runs/ bare-last pe-suffix lora ...
    python experiments/regime/regime.py transfer --results transfer.jsonl --runs-dir runs/ \
        --source runs/pe-suffix/final
    python experiments/regime/regime.py zero-shot --results transfer.jsonl --runs-dir runs/ \
        --source runs/pe-suffix/final
    python experiments/regime/regime.py plot --results runs.jsonl --out experiments/regime/img/regime_ablation.png
    python experiments/regime/regime.py table --results runs.jsonl
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import time
from pathlib import Path

import torch

from promptembedder import PromptEmbedder, PromptEmbedderConfig
from promptembedder.data.datasets import STS_INSTRUCTION, load_sick, load_sts
from promptembedder.evaluation import evaluate_pairs
from promptembedder.models.baselines import PROMPTEOL_TEMPLATE, BackboneEmbedder
from promptembedder.models.config import BaselineConfig
from promptembedder.training import Trainer, TrainingConfig

E, P = "gemma3-270m", "smollm2-135m"
BUDGET = dict(max_steps=20, batch_size=8, max_length=48, seed=42, train_data=["snli", "sts-train"])
STS_PAIRS, SICK_PAIRS, SUBSET_SEED, DEV_PAIRS = 300, 200, 0, 150
DEV_EVAL = dict(do_eval=True, eval_max_pairs=DEV_PAIRS, logging_steps=1, save_steps=10_000, save_model=False,
                show_progress_bar=False, device="cpu")

#: name -> (kind, options). kind: "eval" (no training; BaselineConfig options), "train" (TrainingConfig
#: options), "pe" (TrainingConfig options + "model": PromptEmbedderConfig options the trainer does not expose).
VARIANTS: dict[str, tuple[str, dict]] = {
    "bare-last": ("eval", {"pooling": "last"}),
    "bare-mean": ("eval", {"pooling": "mean"}),
    "prompteol": ("eval", {"pooling": "last", "template": PROMPTEOL_TEMPLATE}),
    "pt-prefix": ("train", {"method": "prompt-tuning", "prompt_position": "prefix"}),
    "pt-suffix": ("train", {"method": "prompt-tuning", "prompt_position": "suffix"}),
    "pe-prefix": ("pe", {"prompt_position": "prefix"}),
    "pe-suffix": ("pe", {"prompt_position": "suffix"}),
    "pe-both": ("pe", {"prompt_position": "both"}),
    "pe-deep": ("pe", {"prompt_position": "deep"}),
    "pt-deep": ("train", {"method": "prompt-tuning", "prompt_position": "deep"}),
    "lora": ("train", {"method": "lora"}),
    "lora-lr1e-3": ("train", {"method": "lora", "learning_rate": 1e-3}),
    "pe-suffix-k10": ("pe", {"prompt_position": "suffix", "num_soft_tokens": 10}),
    "pe-suffix-k20": ("pe", {"prompt_position": "suffix", "num_soft_tokens": 20}),
    "pe-suffix-tau-anneal": ("pe", {"prompt_position": "suffix", "tau_start": 1.0, "tau_end": 0.3}),
    "pe-suffix-hard": ("pe", {"prompt_position": "suffix", "hard": True}),
    "pe-suffix-plora": ("pe", {"prompt_position": "suffix", "prompting_trainable": "lora", "learning_rate": 2e-4}),
    "pe-suffix-wlr1e-2": ("pe", {"prompt_position": "suffix", "alignment_learning_rate": 1e-2}),
    "pe-suffix-wlr1e-4": ("pe", {"prompt_position": "suffix", "alignment_learning_rate": 1e-4}),
    "pe-suffix-wrandom": ("pe", {"prompt_position": "suffix", "model": {"alignment_init": "random"}}),
    "pe-suffix-plr1e-4": ("pe", {"prompt_position": "suffix", "learning_rate": 1e-4}),
}


def subsets() -> dict[str, list]:
    """The seeded evaluation subsets (random.Random(0).sample): 300 STS-B test pairs, and 200 SICK-R pairs when
    $REGIME_SICK is set (left out by default: on the shared 2-core machine it costs ~40 % more per run)."""
    pairs = {"sts-b": random.Random(SUBSET_SEED).sample(load_sts("test"), STS_PAIRS)}
    if os.environ.get("REGIME_SICK"):
        pairs["sick-r"] = random.Random(SUBSET_SEED).sample(load_sick(), SICK_PAIRS)
    return pairs


def score(model, instruction: str | None, pairs: dict[str, list]) -> dict[str, float]:
    start = time.perf_counter()
    scores = {task: evaluate_pairs(model, task_pairs, instruction, batch_size=32)["spearman"]
              for task, task_pairs in pairs.items()}
    return {**scores, "eval_s": time.perf_counter() - start}


def train_time(log: Path, upto: int | None = None) -> float:
    """Seconds spent in training steps (evaluation left out), up to step `upto`."""
    with open(log, newline="") as handle:
        return sum(float(r["step_time_s"]) for r in csv.DictReader(handle) if upto is None or int(r["step"]) <= upto)


def build_pe(options: dict, embedding_model: str, device: torch.device) -> PromptEmbedder:
    model_options = options.get("model", {})
    config = PromptEmbedderConfig(
        prompting_model=P, embedding_model=embedding_model, num_soft_tokens=options.get("num_soft_tokens", 5),
        tau=options.get("tau_start", 1.0), hard=options.get("hard", False), max_length=BUDGET["max_length"],
        prompt_on="both", prompt_position=options.get("prompt_position", "prefix"),
        prompting_trainable=options.get("prompting_trainable", "full"),
        train_alignment=options.get("train_alignment", True), **model_options)
    return PromptEmbedder(config, device=device)


def run_variant(name: str, runs_dir: Path, embedding_model: str = E) -> dict:
    kind, options = VARIANTS[name]
    pairs, device = subsets(), torch.device("cpu")
    started = time.perf_counter()
    record = {"name": name, "embedding_model": embedding_model, "kind": kind, "options": options}
    if kind == "eval":
        model = BackboneEmbedder(BaselineConfig(method=name, embedding_model=embedding_model,
                                                max_length=BUDGET["max_length"], **options), device=device)
        return {**record, **score(model, None, pairs), "wall_s": time.perf_counter() - started}
    train_options = {k: v for k, v in options.items() if k != "model"}
    config = TrainingConfig(
        **BUDGET, prompting_model=P, embedding_model=embedding_model,
        output_dir=str(runs_dir / f"{name}@{embedding_model}"), do_eval=False, logging_steps=1, save_steps=10_000,
        save_model=name == "pe-suffix", show_progress_bar=False, device="cpu",
        **({"method": "promptembedder"} if kind == "pe" else {}), **train_options)
    model = build_pe(options, embedding_model, device) if kind == "pe" else None
    trainer = Trainer(config, model=model)
    result = trainer.train()
    instruction = None if config.method == "prompt-tuning" else STS_INSTRUCTION
    record.update(steps=result.steps, train_s=train_time(Path(config.output_dir) / "log.csv"),
                  median_step_s=result.median_step_time_s, trainable_parameters=result.trainable_parameters,
                  peak_memory_mb=result.peak_memory_mb, log=str(Path(config.output_dir) / "log.csv"))
    return {**record, **score(trainer.model, instruction, pairs), "wall_s": time.perf_counter() - started}


def done(results: Path) -> set[str]:
    if not results.exists():
        return set()
    return {json.loads(line)["key"] for line in results.read_text().splitlines() if line.strip()}


def append(results: Path, record: dict) -> None:
    with open(results, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def claim(runs_dir: Path, key: str) -> bool:
    """Take a run for this process (two queues may share one results file); False if another has it."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    try:
        (runs_dir / f"{key}.claimed").touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def ablation(args: argparse.Namespace) -> None:
    for name in args.variants:
        key = f"{name}@{args.embedding_model}"
        if key in done(args.results) or not claim(args.runs_dir, key):
            continue
        try:
            append(args.results, {"key": key, **run_variant(name, args.runs_dir, args.embedding_model)})
        except Exception as err:  # one failed variant must not stop the queue; it is rerun on restart
            print(f"FAILED {key}: {type(err).__name__}: {err}", flush=True)


def transfer(args: argparse.Namespace) -> None:
    """P trained on Gemma, frozen, with a new least-squares W on E'; against LoRA and prompt tuning from scratch.

    Only the first `DEV_PAIRS` STS-B dev pairs are scored (the budget allows no test subset here): at step 0 and
    every `eval_steps`; the dev curve is in each run's log.csv.
    """
    device = torch.device("cpu")
    target, steps = args.embedding_model, args.steps
    todo = [("transfer-w", None), ("lora", "lora"), ("pt-suffix", "pt-suffix")]
    for name, variant in todo:
        key = f"{name}@{target}"
        if key in done(args.results) or not claim(args.runs_dir, key):
            continue
        started = time.perf_counter()
        record = {"key": key, "name": name}
        if variant is None:
            model = PromptEmbedder.for_new_backbone(args.source, target, device=device)
            record["step0_dev"] = evaluate_pairs(model, load_sts("dev")[:DEV_PAIRS], STS_INSTRUCTION)["spearman"]
            config = TrainingConfig(
                **{**BUDGET, "max_steps": steps}, method="promptembedder", init_from=str(args.source),
                embedding_model=target, output_dir=str(args.runs_dir / key), alignment_learning_rate=args.w_lr,
                **DEV_EVAL, eval_steps=args.eval_steps)
        else:
            kind, options = VARIANTS[variant]
            config = TrainingConfig(**{**BUDGET, "max_steps": steps}, embedding_model=target,
                                    output_dir=str(args.runs_dir / key), **DEV_EVAL, eval_steps=args.eval_steps,
                                    **options)
            model = None
        result = Trainer(config, model=model).train()
        log = Path(config.output_dir) / "log.csv"
        with open(log, newline="") as handle:
            curve = [(int(r["step"]), float(r["dev_score"])) for r in csv.DictReader(handle) if r["dev_score"]]
        record.update(steps=result.steps, train_s=train_time(log), median_step_s=result.median_step_time_s,
                      trainable_parameters=result.trainable_parameters, dev_curve=curve, log=str(log),
                      train_s_at={step: train_time(log, step) for step, _ in curve})
        record["wall_s"] = time.perf_counter() - started
        append(args.results, record)


def zero_shot(args: argparse.Namespace) -> None:
    """Transfer at step 0 (P frozen, W from least squares alone) vs bare E' (last token), on DEV_PAIRS dev pairs."""
    dev, device = load_sts("dev")[:DEV_PAIRS], torch.device("cpu")
    moved = PromptEmbedder.for_new_backbone(args.source, args.embedding_model, device=device)
    record = {"key": f"zero-shot@{args.embedding_model}",
              "transfer_step0_dev": evaluate_pairs(moved, dev, STS_INSTRUCTION)["spearman"]}
    del moved
    bare = BackboneEmbedder(BaselineConfig(method="bare", embedding_model=args.embedding_model,
                                           max_length=BUDGET["max_length"]), device=device)
    record["bare_last_dev"] = evaluate_pairs(bare, dev, None)["spearman"]
    append(args.results, record)


def plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["key"].endswith(f"@{E}") and r["name"] in VARIANTS]
    tasks = [t for t in ("sts-b", "sick-r") if any(t in r for r in rows)]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(tasks)
    for n, task in enumerate(tasks):
        xs = [i + (n - (len(tasks) - 1) / 2) * width for i in range(len(rows))]
        bars = ax.bar(xs, [r.get(task, 0.0) for r in rows], width=width, label=f"{task} test subset")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=30, ha="right")
    ax.set(ylabel="Spearman x100 (seeded subset)",
           title=f"Frozen {E} as E, P = {P}: {BUDGET['max_steps']} steps x batch {BUDGET['batch_size']}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(args.out)


def table(args: argparse.Namespace) -> None:
    """Markdown tables of a results file, in the order the runs finished."""
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    if any("dev_curve" in r for r in rows):
        print("| run on E' | dev at step 0 | dev curve (step: score) | train s at each eval | trainable |")
        print("|---|---|---|---|---|")
        for r in rows:
            curve = ", ".join(f"{step}: {value:.1f}" for step, value in r["dev_curve"])
            times = ", ".join(f"{step}: {sec:.0f}" for step, sec in r["train_s_at"].items())
            zero = f"{r['step0_dev']:.1f}" if "step0_dev" in r else "-"
            print(f"| {r['key']} | {zero} | {curve} | {times} | {r['trainable_parameters']:,} |")
        return
    print("| variant | STS-B test subset | SICK-R subset | train s | median step s | trainable |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        sick = f"{r['sick-r']:.1f}" if "sick-r" in r else "-"
        trained = "train_s" in r
        cells = [f"{r['train_s']:.0f}", f"{r['median_step_s']:.1f}",
                 f"{r['trainable_parameters']:,}"] if trained else ["-", "-", "0"]
        print(f"| {r['key']} | {r['sts-b']:.1f} | {sick} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("ablation", "transfer", "zero-shot", "plot", "table"):
        p = sub.add_parser(command)
        p.add_argument("--results", type=Path, required=True)
        if command in ("ablation", "transfer", "zero-shot"):
            p.add_argument("--runs-dir", type=Path, required=True)
            p.add_argument("--embedding-model", default=E if command == "ablation" else P)
    sub.choices["ablation"].add_argument("variants", nargs="+", choices=list(VARIANTS))
    sub.choices["transfer"].add_argument("--source", type=Path, required=True)
    sub.choices["zero-shot"].add_argument("--source", type=Path, required=True)
    sub.choices["transfer"].add_argument("--steps", type=int, default=20)
    sub.choices["transfer"].add_argument("--eval-steps", type=int, default=10)
    sub.choices["transfer"].add_argument("--w-lr", type=float, default=1e-2, help="W's learning rate (W alone)")
    sub.choices["plot"].add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    commands = {"ablation": ablation, "transfer": transfer, "zero-shot": zero_shot, "plot": plot, "table": table}
    commands[args.command](args)


if __name__ == "__main__":
    main()
