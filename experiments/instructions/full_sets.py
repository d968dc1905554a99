"""Issue 29's 300-step rows on the six tasks' full sets, beside the same rows' quick-subset scores from run.py.

Each row is scored with `promptembedder evaluate` (MTEB's procedures on the full sets, texts cut at the 48 training
tokens); one row's tasks may be split over several output files, as when two threads share its evaluation. Prints a
markdown table (% of LoRA on the full sets and on the subsets; LoRA = the mean of its seeds) and writes a plot.

    OMP_NUM_THREADS=1 promptembedder evaluate runs/instructions300/pe+div1@gemma3-270m/final --tasks all \
        --output experiments/instructions/full_sets/pe+div1.json
    python experiments/instructions/full_sets.py --results experiments/instructions/results_300.jsonl \
        --out experiments/instructions/full_sets.png experiments/instructions/full_sets/*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from report import group_of, rows_of

from promptembedder.bench.subsets import TASK_ORDER


def load(evaluations: list[Path]) -> dict[str, dict[str, dict]]:
    """{row key: {task: its entry}} over every file; a task scored twice for one row is an error, not a choice."""
    rows: dict[str, dict[str, dict]] = {}
    for path in evaluations:
        for entry in json.loads(path.read_text())["models"]:
            key = Path(entry["model"]).parent.name  # <runs-dir>/<row>@<E>/final
            for task, scored in entry["scores"].items():
                if task in rows.setdefault(key, {}):
                    raise SystemExit(f"{path}: {key} is scored on {task} in two files; keep one")
                rows[key][task] = scored
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, required=True, help="run.py's results (the subset scores)")
    parser.add_argument("--out", type=Path, required=True, help="the plot (PNG)")
    parser.add_argument("--label", default="", help="added to the plot's title (which models these are)")
    parser.add_argument("evaluations", nargs="+", type=Path, help="promptembedder evaluate --output files")
    args = parser.parse_args()
    subsets = {r["key"]: r["scores"]["six"] for r in rows_of(args.results)}
    rows = []
    for key, entries in sorted(load(args.evaluations).items(), key=lambda item: not item[0].startswith("lora")):
        missing = [t for t in TASK_ORDER if t not in entries]
        if missing or key not in subsets:
            raise SystemExit(f"{key}: " + (f"not scored on {', '.join(missing)}" if missing else
                                           f"no row in {args.results}"))
        full = {t: entries[t]["main_score"] for t in TASK_ORDER}
        minutes = sum(entries[t]["evaluation_time"] for t in TASK_ORDER) / 60
        rows.append((key.split("@")[0], full, float(np.mean(list(full.values()))), subsets[key], minutes))
    loras = [(mean, sub["mean"]) for name, _, mean, sub, _ in rows if name.split("+")[0] == "lora"]
    lora = tuple(float(np.mean(x)) for x in zip(*loras, strict=True)) if loras else None
    of = f"LoRA's mean over {len(loras)} seeds" if len(loras) > 1 else "LoRA"
    print("| row | " + " | ".join(TASK_ORDER) + f" | mean (full) | % of {of} (full) | mean (subsets) | "
          f"% of {of} (subsets) | eval min |")
    print("|---" * (len(TASK_ORDER) + 6) + "|")
    for name, full, mean, sub, minutes in rows:
        shares = [f"{100 * m / ref:.1f} %" for m, ref in zip((mean, sub["mean"]), lora, strict=True)] if lora \
            else ["-", "-"]
        print(f"| {name} | " + " | ".join(f"{full[t]:.1f} ({sub['scores'][t]:.1f})" for t in TASK_ORDER)
              + f" | {mean:.2f} | {shares[0]} | {sub['mean']:.2f} | {shares[1]} | {minutes:.0f} |")
    groups: dict[str, list[float]] = {}
    for name, _, mean, _, _ in rows:
        groups.setdefault(group_of(name), []).append(mean)
    for group, means in groups.items():
        if len(means) > 1:
            share = f" = {100 * np.mean(means) / lora[0]:.2f} % of {of}" if lora else ""
            print(f"\n{group} over {len(means)} seeds: full-set mean {np.mean(means):.2f}{share} "
                  f"(range {min(means):.2f}-{max(means):.2f})")
    plot(rows, args.out, args.label)


def plot(rows: list[tuple], out: Path, label: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(rows)
    for n, (name, full, mean, sub, _) in enumerate(rows):
        xs = np.arange(len(TASK_ORDER) + 1) + (n - (len(rows) - 1) / 2) * width
        ax.bar(xs, [full[t] for t in TASK_ORDER] + [mean], width=width, label=f"{name}, full sets")
        ax.scatter(xs, [sub["scores"][t] for t in TASK_ORDER] + [sub["mean"]], marker="_", s=150, zorder=3,
                   color="black", label="the same model on the quick subsets" if n == 0 else None)
    ax.set_xticks(range(len(TASK_ORDER) + 1), [*TASK_ORDER, "mean"])
    title = ("Gemma 3 270M as E, 300 steps x 16 on multitask + its NLI, seed 42 unless named:\n"
             "full sets (bars) against the quick subsets (ticks)" + (f", {label}" if label else ""))
    ax.set(ylabel="main score x100", title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
