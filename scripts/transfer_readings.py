"""Round 5's transfer readings (docs/regime.md): a P trained on Gemma moved to SmolLM2-135M as E', per prompt position,
with the demo's transfer settings (10 steps x 8 at 48 tokens on the four sources, dev on 100 STS-B dev pairs at
steps 0, 5 and 10, the best-dev and final checkpoints scored on the 300-pair STS-B test subset).

    python scripts/transfer_readings.py transfer SOURCE_DIR smollm2-135m deep OUT      # P frozen; W (+ offsets)
    python scripts/transfer_readings.py scratch smollm2-135m deep OUT                  # prompt tuning from scratch
    python scripts/transfer_readings.py untrained smollm2-135m gemma3-270m deep OUT    # save an untrained P as a source
    python scripts/transfer_readings.py plot OUT.png LABEL=RUN_DIR ...                 # dev curves

`transfer` and `scratch` print one line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from rich.console import Console

from promptembedder.auto import load_embedder
from promptembedder.demo import DemoConfig, _common, train_in_subprocess
from promptembedder.evaluation.subsets import score_suite
from promptembedder.training import TRANSFER_ALIGNMENT_LR, TrainingConfig

SETTINGS = dict(max_steps=10, save_steps=10, do_eval=True, eval_on_start=True, eval_steps=5, eval_max_pairs=100)


def run(config: TrainingConfig, instructions: bool) -> None:
    console = Console()
    summary = train_in_subprocess(config, console)
    out = Path(config.output_dir)
    test = {c: score_suite(load_embedder(out / c, device="cpu"), instructions, ("sts-b",), log=console.print)
            ["scores"]["sts-b"] for c in ("best", "final")}
    rows = dev_rows(out)
    print("RESULT " + json.dumps({"output_dir": str(out), "method": config.method, "init_from": config.init_from,
                                  "embedding_model": config.embedding_model,
                                  "prompt_position": config.prompt_position, "best_dev": summary["best_dev_score"],
                                  "test": test, "trainable": summary.get("trainable_parameters"),
                                  "median_step_s": summary.get("median_step_time_s"),
                                  "dev_curve": [(int(r["step"]), float(r["dev_score"])) for r in rows]}))


def dev_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "log.csv", newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["dev_score"]]


def common() -> dict:
    return {**_common(DemoConfig()), "show_progress_bar": False, **SETTINGS}


def plot(out: Path, runs: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for item in runs:
        label, folder = item.split("=", 1)
        rows = dev_rows(Path(folder))
        ax.plot([int(r["step"]) for r in rows], [float(r["dev_score"]) for r in rows], marker="o", label=label)
    ax.set(xlabel="step (batch 8)", ylabel="STS-B dev Spearman x100 (100 pairs)",
           title="Transfer to SmolLM2-135M as E': dev from step 0")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("transfer")
    p.add_argument("source"), p.add_argument("embedding_model"), p.add_argument("position"), p.add_argument("out")
    p = sub.add_parser("scratch")
    p.add_argument("embedding_model"), p.add_argument("position"), p.add_argument("out")
    p = sub.add_parser("untrained")
    for name in ("prompting_model", "embedding_model", "position", "out"):
        p.add_argument(name)
    p = sub.add_parser("plot")
    p.add_argument("out", type=Path), p.add_argument("runs", nargs="+")
    args = parser.parse_args()
    if args.command == "transfer":
        run(TrainingConfig(method="promptembedder", init_from=args.source, embedding_model=args.embedding_model,
                           prompt_position=args.position, alignment_learning_rate=TRANSFER_ALIGNMENT_LR,
                           output_dir=args.out, **common()), instructions=True)
    elif args.command == "scratch":
        run(TrainingConfig(method="prompt-tuning", embedding_model=args.embedding_model, prompt_position=args.position,
                           output_dir=args.out, **common()), instructions=False)
    elif args.command == "untrained":
        from promptembedder import PromptEmbedder

        PromptEmbedder(prompting_model=args.prompting_model, embedding_model=args.embedding_model,
                       prompt_position=args.position, max_length=DemoConfig().max_length,
                       device="cpu").save_pretrained(args.out)
    else:
        plot(args.out, args.runs)


if __name__ == "__main__":
    main()
