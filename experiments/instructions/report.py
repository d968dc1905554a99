"""Issue 29's tables and plot from `run.py`'s results: every row, the mean over seeds, PromptEmbedder against each
static row paired by seed and task, and a bar plot.

    python experiments/instructions/report.py table --results R.jsonl
    python experiments/instructions/report.py seeds --results R.jsonl      # mean over seeds, pe vs pt/table by seed
    python experiments/instructions/report.py plot --results R.jsonl --out experiments/instructions/results.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from run import BUDGET


def rows_of(results: Path) -> list[dict]:
    return [json.loads(line) for line in results.read_text().splitlines() if line.strip()]


def summary(record: dict) -> dict:
    s = record["scores"]
    six = s["six"]
    return {"nli": s["nli_follow"]["paired_accuracy"], "nli_e": s["nli_follow"]["entailment"],
            "nli_c": s["nli_follow"]["contradiction"],
            "nli_held": s["nli_follow"]["wordings"]["held_out"]["paired_accuracy"],
            "unseen": s["unseen_tasks"]["main_score"], "wording_train": s["unseen_wording"]["training_wording"],
            "wording_held": s["unseen_wording"]["main_score"], "drop": s["unseen_wording"]["drop"],
            "six": six.get("mean", float("nan"))}


def table(args: argparse.Namespace) -> None:
    rows = rows_of(args.results)
    lora = [summary(r)["six"] for r in rows if group_of(r["name"]) == "lora"]  # its seeds, not its levers
    print("| row | nli-follow paired (ent / con) | held-out wording | unseen tasks (11) | wording: train -> held-out "
          "(drop) | six-task mean | % of LoRA | steps | train s | eval s | P's prompt cosine (mean) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        v = summary(r)
        share = f"{100 * v['six'] / np.mean(lora):.1f} %" if lora else "-"
        cosine = (r.get("prompt_cosine") or {}).get("mean")
        print(f"| {r['key']} | {v['nli']:.1f} ({v['nli_e']:.1f} / {v['nli_c']:.1f}) | {v['nli_held']:.1f} | "
              f"{v['unseen']:.2f} | {v['wording_train']:.2f} -> {v['wording_held']:.2f} ({v['drop']:+.2f}) | "
              f"{v['six']:.2f} | {share} | {r.get('steps', '-')} | {r.get('train_s', 0):.0f} | "
              f"{r['eval_total_s']:.0f} | {'-' if cosine is None else f'{cosine:.3f}'} |")


def seed_of(record: dict) -> int:
    return record.get("budget", {}).get("seed", BUDGET["seed"])


def group_of(name: str) -> str:
    """The row without its seed lever: `pe+seed7+div1` and `pe+div1` are one group."""
    return "+".join(p for p in name.split("+") if not p.startswith("seed"))


def seeds(args: argparse.Namespace) -> None:
    """Each trained row's mean and range over its seeds, then PromptEmbedder against each static row on the unseen
    tasks, paired by seed (the same seed draws the same batches) and by task."""
    groups: dict[str, dict[int, dict]] = {}
    for r in rows_of(args.results):
        groups.setdefault(group_of(r["name"]), {})[seed_of(r)] = r
    print("| row | seeds | nli-follow | unseen tasks (11) | wording drop | six-task mean |")
    print("|---|---|---|---|---|---|")
    for name, by_seed in groups.items():
        values = [summary(r) for r in by_seed.values()]
        cells = []
        for key in ("nli", "unseen", "drop", "six"):
            x = [v[key] for v in values]
            cells.append(f"{np.mean(x):.2f}" + (f" ({min(x):.2f}-{max(x):.2f})" if len(x) > 1 else ""))
        print(f"| {name} | {', '.join(map(str, sorted(by_seed)))} | {' | '.join(cells)} |")
    base = groups.get(args.row, {})
    for other in args.against:
        shared = sorted(set(base) & set(groups.get(other, {})))
        if not shared:
            print(f"\n{args.row} and {other} share no seed")
            continue
        diffs, per_task = [], {}
        for seed in shared:
            a, b = (groups[g][seed]["scores"]["unseen_tasks"] for g in (args.row, other))
            diffs.append(a["main_score"] - b["main_score"])
            for task, score in a["per_task"].items():
                per_task.setdefault(task, []).append(score - b["per_task"][task])
        task_seeds = [d for ds in per_task.values() for d in ds]
        wins, ties, total = sum(d > 0 for d in task_seeds), sum(d == 0 for d in task_seeds), len(task_seeds)
        task_means = {task: np.mean(d) for task, d in per_task.items()}
        print(f"\n{args.row} - {other}, unseen tasks, seeds {', '.join(map(str, shared))}: mean "
              f"{np.mean(diffs):+.2f} (per seed {', '.join(f'{d:+.2f}' for d in diffs)}); above on {wins} of {total} "
              f"task-seeds, level on {ties}; on the mean over these seeds above on "
              f"{sum(d > 0 for d in task_means.values())} of {len(task_means)} tasks (standard error across tasks "
              f"{np.std(list(task_means.values()), ddof=1) / np.sqrt(len(task_means)):.2f})")
        print("  per task, mean over seeds: " + ", ".join(
            f"{task.split('/')[-1]} {d:+.1f}" for task, d in sorted(task_means.items(), key=lambda kv: -kv[1])))


def plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rows_of(args.results)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(group_of(r["name"]), []).append(summary(r))
    metrics = [("nli", "nli-follow\n(paired acc.)"), ("unseen", "unseen tasks\n(probe acc.)"),
               ("wording_held", "unseen wording\n(probe acc.)"), ("six", "six-task suite\n(mean)")]
    fig, ax = plt.subplots(figsize=(13, 4.5))
    width = 0.8 / len(groups)
    for i, (name, values) in enumerate(groups.items()):
        x = np.arange(len(metrics)) + i * width
        label = name + (f" ({len(values)} seeds)" if len(values) > 1 else "")
        ax.bar(x, [np.mean([v[m] for v in values]) for m, _ in metrics], width, label=label)
        if len(values) > 1:  # each seed as a dot on its bar: the spread the mean hides
            for v in values:
                ax.plot(x, [v[m] for m, _ in metrics], "o", color="black", markersize=2.5)
    ax.axhline(50, color="grey", linestyle="--", linewidth=0.8)
    ax.text(-0.4, 51, "50: ignores the instruction (nli-follow)", fontsize=8, color="grey")
    ax.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, [label for _, label in metrics])
    ax.set_ylabel("score x100")
    steps = sorted({r["budget"]["max_steps"] for r in rows if "budget" in r})
    seeds = sorted({seed_of(r) for r in rows if "budget" in r})
    budget = (f"{'/'.join(map(str, steps))} steps x batch {BUDGET['batch_size']}, seed{'s' * (len(seeds) > 1)} "
              f"{', '.join(map(str, seeds))}, quick subsets; bars: mean over seeds, dots: each seed")
    ax.set_title(f"Instruction-aware or static? Gemma 3 270M as E, multitask + its NLI at half\n({budget})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars: inside, it hid some
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("table")
    p.add_argument("--results", type=Path, required=True)
    p.set_defaults(func=table)
    p = sub.add_parser("seeds")
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--row", default="pe", help="the row compared (seed levers stripped)")
    p.add_argument("--against", nargs="+", default=["pt", "table"])
    p.set_defaults(func=seeds)
    p = sub.add_parser("plot")
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=plot)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
