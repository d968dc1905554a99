"""Transfer readings (experiments/regime/LOG.md): a P trained on Gemma moved to SmolLM2-135M as E', against LoRA and
prompt tuning from scratch there. By default round 5's settings, the demo's (10 steps x 8 at 48 tokens on the four
sources, dev on 100 STS-B dev pairs at steps 0, 5 and 10, the best-dev and final checkpoints scored on the 300-pair
STS-B test subset); round 7 used `--steps 20 --dev-pairs 300 --test full`.

    # P frozen; W (+ offsets)
    python experiments/regime/transfer_readings.py transfer SOURCE_DIR smollm2-135m deep OUT
    # prompt tuning from scratch
    python experiments/regime/transfer_readings.py scratch smollm2-135m deep OUT
    # LoRA from scratch (lr 1e-3)
    python experiments/regime/transfer_readings.py lora smollm2-135m OUT
    # save an untrained P as a source
    python experiments/regime/transfer_readings.py untrained smollm2-135m gemma3-270m deep OUT
    # dev curves
    python experiments/regime/transfer_readings.py plot OUT.png LABEL=RUN_DIR ...
    # time to LoRA's dev target
    python experiments/regime/transfer_readings.py compare RESULTS.jsonl
    # is the steering in P or W?
    python experiments/regime/transfer_readings.py drift SOURCE_DIR ...

`transfer`, `scratch` and `lora` print one line `RESULT {json}`; `compare` reads those lines.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from rich.console import Console

from promptembedder.auto import load_embedder
from promptembedder.bench.demo import DemoConfig, _common, train_in_subprocess
from promptembedder.bench.subsets import score_suite
from promptembedder.evaluation import evaluate
from promptembedder.training import TRANSFER_ALIGNMENT_LR, TrainingConfig

#: LoRA's rate on E' (the rate that won on Gemma in round 4; the demo's 2e-4 did not learn in 10 steps).
LORA_LR = 1e-3


def run(config: TrainingConfig, instructions: bool, full_test: bool) -> None:
    console = Console()
    summary = train_in_subprocess(config, console)
    out = Path(config.output_dir)
    # best/ and final/ hold the same weights when the last dev reading is the best: score them once
    same = summary["best_dev_score"] == summary.get("final_dev_score")
    test = {c: test_score(load_embedder(out / c, device="cpu"), instructions, full_test, console)
            for c in (("best",) if same else ("best", "final"))}
    test.setdefault("final", test["best"])
    print("RESULT " + json.dumps({"output_dir": str(out), "method": config.method, "init_from": config.init_from,
                                  "embedding_model": config.embedding_model, "seed": config.seed,
                                  "alignment_learning_rate": config.alignment_learning_rate,
                                  "prompt_position": config.prompt_position, "best_dev": summary["best_dev_score"],
                                  "test": test, "test_set": "full" if full_test else "subset",
                                  "dev_pairs": config.eval_max_pairs, "trainable": summary.get("trainable_parameters"),
                                  "median_step_s": summary.get("median_step_time_s"),
                                  "dev_curve": dev_curve(out)}))


def test_score(model, instructions: bool, full_test: bool, console: Console) -> float:
    """STS-B test Spearman x100: all 1,379 pairs (MTEB's procedure) or the 300-pair subset of the six-task suite."""
    if not full_test:
        return score_suite(model, instructions, ("sts-b",), log=console.print)["scores"]["sts-b"]
    score = evaluate(model, ["sts-b"], instructions=None if instructions else {"sts-b": None})["sts-b"]["main_score"]
    console.print(f"  sts-b (full test): {score:.2f}")
    return score


def dev_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, dev score) of every dev reading in the run's log."""
    with open(run_dir / "log.csv", newline="") as handle:
        return [(int(r["step"]), float(r["dev_score"])) for r in csv.DictReader(handle) if r["dev_score"]]


def timed_curve(run: dict) -> list[tuple[int, float, float]]:
    """(step, dev, training seconds): steps x the run's median step time, so the dev evaluations and a shared
    machine's slow steps do not count (the log keeps one step's time per logged row, not their sum)."""
    return [(step, dev, step * run["median_step_s"]) for step, dev, *_ in run["dev_curve"]]


def common(args: argparse.Namespace) -> dict:
    return {**_common(DemoConfig()), "show_progress_bar": False, "max_steps": args.steps, "save_steps": args.steps,
            "do_eval": True, "eval_on_start": True, "eval_steps": args.eval_steps, "eval_max_pairs": args.dev_pairs,
            "seed": args.seed}


def first_hit(run: dict, target: float) -> tuple[int, float] | None:
    """(step, training seconds) of the run's first dev reading at or above target (dev is logged to 3 decimals)."""
    return next(((step, s) for step, dev, s in timed_curve(run) if dev >= round(target, 3)), None)


def compare(results: Path) -> None:
    """Per run: dev at step 0 and at its best, test, and the steps and training seconds to LoRA's dev target (the
    mean of the LoRA runs' best dev, then the lowest), with the speed-up over LoRA's mean time to it (paper: 3.8x),
    and each run's dev at equal training time (the shortest run's)."""
    runs = [json.loads(line.removeprefix("RESULT ")) for line in results.read_text().splitlines() if line.strip()]
    lora = [r for r in runs if r["method"] == "lora"]
    if not lora:
        raise SystemExit(f"{results}: no LoRA run to take the dev target from")
    targets = {"LoRA's mean best dev": sum(r["best_dev"] for r in lora) / len(lora),
               "the lowest LoRA best dev": min(r["best_dev"] for r in lora)}
    # equal wall time: the shortest run's training seconds; each run's last dev reading by then
    equal_s = min(timed_curve(r)[-1][2] for r in runs)
    for label, target in targets.items():
        hits = [first_hit(r, target) for r in lora]
        lora_s = [hit[1] for hit in hits if hit]
        lora_mean = sum(lora_s) / len(lora_s) if lora_s else None
        print(f"\n### target: {label} = {target:.2f}; LoRA's mean training s to it: "
              + (f"{lora_mean:.0f} ({len(lora_s)} of {len(lora)} LoRA runs reach it)\n" if lora_mean else "-\n"))
        print(f"| run | seed | dev step 0 | dev at {equal_s:.0f} s | best dev | test best / final | reaches it at step "
              "| training s | speed-up over LoRA |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in runs:
            hit = first_hit(r, target)
            speedup = ("-" if not (hit and lora_mean) else "at step 0" if hit[1] == 0 else f"{lora_mean / hit[1]:.1f}x")
            at_equal = [dev for _, dev, s in timed_curve(r) if s <= equal_s][-1]
            print(f"| {Path(r['output_dir']).name} | {r.get('seed', 42)} | {r['dev_curve'][0][1]:.1f} | "
                  f"{at_equal:.1f} | {r['best_dev']:.1f} | {r['test']['best']:.1f} / {r['test']['final']:.1f} | "
                  + (f"{hit[0]} | {hit[1]:.0f} | {speedup} |" if hit else "not reached | - | - |"))


def drift(sources: list[str]) -> None:
    """Where a trained PromptEmbedder keeps its steering: in P's soft tokens, or in W? For each saved model, W's
    distance from the least-squares W that a transfer would start from (on the same E), how much that changes the
    prompt E reads for each training instruction, and the STS-B test-subset score with P kept and W reset."""
    import torch

    from promptembedder import PromptEmbedder
    from promptembedder.data.datasets import NLI_INSTRUCTION, STS_INSTRUCTION
    from promptembedder.evaluation import TASKS

    instructions = {"sts": STS_INSTRUCTION, "nli": NLI_INSTRUCTION, "banking77": TASKS["banking77"].instruction,
                    "mrpc": TASKS["mrpc"].instruction, "20ng (unseen)": TASKS["twentynewsgroups"].instruction}
    for source in sources:
        trained = PromptEmbedder.from_pretrained(source, device="cpu").eval()
        reset = PromptEmbedder.for_new_backbone(source, trained.config.embedding_model,
                                                prompt_position=trained.config.prompt_position, device="cpu").eval()
        w_t, w_0 = trained.alignment.linear.weight, reset.alignment.linear.weight
        with torch.no_grad():
            change = {}
            for name, instruction in instructions.items():
                soft = trained.generator(instruction).embeddings
                change[name] = round(float(((w_t - w_0) @ soft.T).norm() / (w_t @ soft.T).norm()), 3)
        scores = {label: score_suite(model, True, ("sts-b",), log=lambda _: None)["scores"]["sts-b"]
                  for label, model in (("trained", trained), ("P trained, W reset", reset))}
        print("DRIFT " + json.dumps({"source": source, "w_relative_change": round(float((w_t - w_0).norm()
                                     / w_0.norm()), 3), "prompt_relative_change": change, "sts-b_subset": scores}))


def plot(out: Path, runs: list[str]) -> None:
    """Dev curves against steps and against training seconds (as in `compare`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    pairs = "?"
    for item in runs:
        label, folder = item.split("=", 1)
        config = json.loads((Path(folder) / "demo_training_config.json").read_text())
        summary = json.loads((Path(folder) / "train_summary.json").read_text())
        curve = timed_curve({"dev_curve": dev_curve(Path(folder)), "median_step_s": summary["median_step_time_s"]})
        pairs = config.get("eval_max_pairs") or "all"
        by_step.plot([c[0] for c in curve], [c[1] for c in curve], marker="o", label=label)
        by_time.plot([c[2] for c in curve], [c[1] for c in curve], marker="o", label=label)
    by_step.set(xlabel="step (batch 8)", ylabel=f"STS-B dev Spearman x100 ({pairs} pairs)",
                title="Transfer to SmolLM2-135M as E': dev from step 0")
    by_time.set(xlabel="training seconds (steps x median step time)", title="the same runs against training time")
    by_time.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="training steps (batch 8)")
    parser.add_argument("--eval-steps", type=int, default=5, help="dev every N steps, and at step 0")
    parser.add_argument("--dev-pairs", type=int, default=100, help="seeded sample of STS-B dev pairs")
    parser.add_argument("--test", choices=("subset", "full"), default="subset",
                        help="STS-B test: the 300-pair subset or all 1,379 pairs")
    parser.add_argument("--seed", type=int, default=42, help="training seed (batch order, initialisation)")
    parser.add_argument("--w-lr", type=float, default=TRANSFER_ALIGNMENT_LR, help="W's learning rate (`transfer`)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("transfer")
    p.add_argument("source"), p.add_argument("embedding_model"), p.add_argument("position"), p.add_argument("out")
    p = sub.add_parser("scratch")
    p.add_argument("embedding_model"), p.add_argument("position"), p.add_argument("out")
    p = sub.add_parser("lora")
    p.add_argument("embedding_model"), p.add_argument("out")
    p = sub.add_parser("untrained")
    for name in ("prompting_model", "embedding_model", "position", "out"):
        p.add_argument(name)
    p = sub.add_parser("plot")
    p.add_argument("out", type=Path), p.add_argument("runs", nargs="+")
    p = sub.add_parser("compare")
    p.add_argument("results", type=Path)
    p = sub.add_parser("drift")
    p.add_argument("sources", nargs="+")
    args = parser.parse_args()
    full_test = args.test == "full"
    if args.command == "transfer":
        run(TrainingConfig(method="promptembedder", init_from=args.source, embedding_model=args.embedding_model,
                           prompt_position=args.position, alignment_learning_rate=args.w_lr,
                           output_dir=args.out, **common(args)), instructions=True, full_test=full_test)
    elif args.command == "scratch":
        run(TrainingConfig(method="prompt-tuning", embedding_model=args.embedding_model, prompt_position=args.position,
                           output_dir=args.out, **common(args)), instructions=False, full_test=full_test)
    elif args.command == "lora":
        run(TrainingConfig(method="lora", embedding_model=args.embedding_model, learning_rate=LORA_LR,
                           output_dir=args.out, **common(args)), instructions=True, full_test=full_test)
    elif args.command == "untrained":
        from promptembedder import PromptEmbedder

        PromptEmbedder(prompting_model=args.prompting_model, embedding_model=args.embedding_model,
                       prompt_position=args.position, max_length=DemoConfig().max_length,
                       device="cpu").save_pretrained(args.out)
    elif args.command == "compare":
        compare(args.results)
    elif args.command == "drift":
        drift(args.sources)
    else:
        plot(args.out, args.runs)


if __name__ == "__main__":
    main()
