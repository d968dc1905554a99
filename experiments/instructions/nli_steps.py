"""Does nli-follow grow with the budget? The NLI-only rows trained for 300, 1,000 and 2,500 steps: their training
loss (100-step means, from each run's `log.csv`) and nli-follow on test premises (hypotheses read as trained,
without the instruction) and on e-SNLI dev premises, which training read (`nli_geometry.py --plain --split dev`).

    cd experiments/instructions && python nli_steps.py \
        --results results_300_documents.jsonl results_1000_nli.jsonl results_2500_nli.jsonl \
        --dev nli_follow_dev.json nli_follow_dev_more.json nli_follow_dev_long.json \
        --rows table+plaindocs+nlionly+lr3e-2 pe+plaindocs+nlionly --out nli_steps.png
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from report import rows_of, seed_of

ROOT = Path(__file__).resolve().parents[2]  # run.py's logs are relative to the repository root


def loss_means(log: Path, window: int = 100) -> tuple[list[int], list[float]]:
    """Mean training loss over each `window` steps: single steps swing too much to read."""
    with log.open() as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    ends = list(range(window, len(losses) + 1, window))
    return ends, [float(np.mean(losses[end - window:end])) for end in ends]


def points(args: argparse.Namespace) -> dict[str, list[dict]]:
    """Per row, one point per budget (seed 42 only): steps, the test and dev readings, the loss curve."""
    dev: dict[str, dict] = {}
    for path in args.dev:
        dev.update(json.loads(path.read_text()))
    out: dict[str, list[dict]] = {name: [] for name in args.rows}
    for results in args.results:
        for r in rows_of(results):
            if r["name"] not in out or seed_of(r) != 42:
                continue
            run = Path(r["log"]).parent
            reading = dev.get(f"../../{run}/final", {}).get("training", {})
            log = ROOT / r["log"]
            out[r["name"]].append({"steps": r["steps"], "test": r["scores"]["nli_follow_plain"]["training"],
                                   "dev": reading or None, "train_s": r["train_s"],
                                   "loss": loss_means(log) if log.exists() else None})
    for name, found in out.items():
        if not found:
            raise SystemExit(f"no seed-42 record of row {name!r} in {[str(p) for p in args.results]}")
        found.sort(key=lambda p: p["steps"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, nargs="+", required=True)
    parser.add_argument("--dev", type=Path, nargs="*", default=[])
    parser.add_argument("--rows", nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    found = points(args)
    for name, ps in found.items():
        for p in ps:
            dev = "-" if p["dev"] is None else f"{p['dev']['paired_accuracy']:.1f}"
            print(f"{name} {p['steps']} steps: test {p['test']['paired_accuracy']:.1f} "
                  f"({p['test']['entailment']:.0f} / {p['test']['contradiction']:.0f}), dev {dev}, "
                  f"train {p['train_s']:.0f} s")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, (name, ps) in enumerate(found.items()):
        color = f"C{i}"
        longest = max((p for p in ps if p["loss"]), key=lambda p: p["steps"], default=None)
        if longest:  # the longest run's only: a shorter budget decays its learning rate sooner, not a prefix of it
            left.plot(*longest["loss"], "o-", color=color, markersize=3, label=f"{name} ({longest['steps']} steps)")
        steps = [p["steps"] for p in ps]
        right.plot(steps, [p["test"]["paired_accuracy"] for p in ps], "o-", color=color,
                   label=f"{name}: test premises")
        with_dev = [p for p in ps if p["dev"]]
        right.plot([p["steps"] for p in with_dev], [p["dev"]["paired_accuracy"] for p in with_dev], "s--",
                   color=color, label=f"{name}: dev premises (read in training)")
    left.set_xlabel("step")
    left.set_ylabel("training loss (mean of 100 steps)")
    left.legend(fontsize=8)
    right.axhline(50, color="grey", linestyle=":", linewidth=0.8)
    right.axhline(75, color="red", linestyle=":", linewidth=0.8)
    right.text(right.get_xlim()[0], 75.5, "issue's target, 75", fontsize=8, color="red")
    right.text(right.get_xlim()[0], 50.5, "50: ignores the instruction", fontsize=8, color="grey")
    right.set_xscale("log")
    budgets = sorted({p["steps"] for ps in found.values() for p in ps})
    right.set_xticks(budgets, [f"{b:,}" for b in budgets])
    right.minorticks_off()
    right.set_xlabel("training steps of batch 16 (log scale)")
    right.set_ylabel("nli-follow paired accuracy")
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, 0.93))  # above the lines, below 75
    fig.suptitle("Gemma 3 270M as frozen E, trained on nli-contrastive alone, seed 42; 100 premises per point")
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
