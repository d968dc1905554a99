"""The six-task round of experiments/regime/LOG.md: multi-task training with per-task instructions, scored on the
quick suite.

Every trained row uses the same budget (`BUDGET`): e-SNLI, STS-B train, Banking77 train and MRPC train, one
instruction per source and batch, equal task weights. 20 Newsgroups has no training source, so its instruction
is never seen in training (the instruction-generalisation test). One JSON line per run goes to `--results`; a run
already there is skipped, so the queue can be restarted. Every trained row keeps its model in
`<runs-dir>/<row>@<E>/final`, so `promptembedder evaluate` can score it on the full sets.

    python experiments/regime/regime_six.py run --results experiments/regime/results/regime_results_v2.jsonl \
        --runs-dir runs bare-last lora pe-prefix
    python experiments/regime/regime_six.py run ... pe-suffix+plr1e-4+wlr1e-2     # a base row plus levers
    python experiments/regime/regime_six.py table --results experiments/regime/results/regime_results_v2.jsonl
    python experiments/regime/regime_six.py plot --results experiments/regime/results/regime_results_v2.jsonl \
        --out experiments/regime/img/regime_six.png
    python experiments/regime/regime_six.py full --results R.jsonl ... --out experiments/regime/img/full_sets.png \
        evaluate_output.json ...

Names: the eval rows `bare-last`, `bare-mean`, `prompteol`, `instr-text` (bare last token, each task's instruction
as E5-style text); the trained rows `lora`, `pt-suffix`, `pt-prefix`, `pt-deep`, `pe-prefix`, `pe-suffix`,
`pe-both`, `pe-deep` (`deep`: the prompt at every layer's keys and values, deep_prompt.py); and
levers appended with "+": plr1e-4 (P's learning rate), wlr1e-2, wlr1e-3, wlr1e-4 and wlr0 (W's), wfrozen (W kept
at its least-squares start and out of the optimizer and gradient clipping, so that P alone steers), lr1e-3 and
lr1e-2 (a baseline's learning rate; P's for PromptEmbedder), seed7 and seed1234 (other seeds), anneal (tau 1 ->
0.3), hard, k10, k20, plora (P trained through LoRA adapters), wrandom (W initialised at random instead of by least
squares).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from regime import VARIANTS, E, P, append, build_pe, claim, done, train_time

from promptembedder.bench.subsets import SIZES, TASK_ORDER, describe, score_suite
from promptembedder.data.datasets import NLI_INSTRUCTION, STS_INSTRUCTION
from promptembedder.evaluation import TASKS
from promptembedder.models.baselines import BackboneEmbedder
from promptembedder.models.config import BaselineConfig
from promptembedder.training import Trainer, TrainingConfig, make_batches

SOURCES = ["esnli", "sts-train", "banking77-train", "mrpc-train"]
BUDGET = dict(max_steps=40, batch_size=8, max_length=48, seed=42, train_data=SOURCES,
              task_weights={source: 1.0 for source in SOURCES})
LEVERS = {"plr1e-4": {"learning_rate": 1e-4}, "wlr1e-2": {"alignment_learning_rate": 1e-2},
          "wlr1e-3": {"alignment_learning_rate": 1e-3}, "wlr1e-4": {"alignment_learning_rate": 1e-4},
          "wlr0": {"alignment_learning_rate": 0.0}, "wfrozen": {"train_alignment": False},
          "lr1e-3": {"learning_rate": 1e-3}, "lr1e-2": {"learning_rate": 1e-2}, "seed7": {"seed": 7},
          "seed1234": {"seed": 1234}, "div1": {"prompt_diversity": 1.0}, "div2": {"prompt_diversity": 2.0},
          "div5": {"prompt_diversity": 5.0},
          "anneal": {"tau_start": 1.0, "tau_end": 0.3}, "hard": {"hard": True}, "k10": {"num_soft_tokens": 10},
          "k20": {"num_soft_tokens": 20}, "plora": {"prompting_trainable": "lora"},
          "wrandom": {"model": {"alignment_init": "random"}}}
EVAL_ROWS = {**{name: VARIANTS[name] for name in ("bare-last", "bare-mean", "prompteol")},
             "instr-text": ("eval", {"pooling": "last"})}
#: Rows that read each task's instruction at evaluation (PromptEmbedder's P; LoRA and instr-text as text).
INSTRUCTED = ("pe-", "lora", "instr-text")
SOURCE_NAMES = {NLI_INSTRUCTION: "esnli", STS_INSTRUCTION: "sts-train",
                TASKS["banking77"].instruction: "banking77-train", TASKS["mrpc"].instruction: "mrpc-train"}


def parse(name: str) -> tuple[str, dict]:
    """`base+lever+lever` -> (kind, options)."""
    base, *levers = name.split("+")
    if base in EVAL_ROWS and not levers:
        return EVAL_ROWS[base]
    if base not in VARIANTS or VARIANTS[base][0] == "eval":
        raise SystemExit(f"unknown row {name!r}: base must be one of {sorted(EVAL_ROWS) + sorted(VARIANTS)}")
    kind, options = VARIANTS[base]
    for lever in levers:
        if lever not in LEVERS:
            raise SystemExit(f"unknown lever {lever!r} in {name!r} (known: {', '.join(LEVERS)})")
        options = {**options, **LEVERS[lever]}
    return kind, options


def run_row(name: str, runs_dir: Path, tasks: tuple[str, ...] = TASK_ORDER) -> dict:
    kind, options = parse(name)
    device = torch.device("cpu")
    instructions = name.startswith(INSTRUCTED)
    started = time.perf_counter()
    record = {"name": name, "embedding_model": E, "kind": kind, "options": options, "budget": BUDGET,
              "subsets": SIZES, "instructions": instructions}
    if kind == "eval":
        model = BackboneEmbedder(BaselineConfig(method=name, embedding_model=E, max_length=BUDGET["max_length"],
                                                **options), device=device)
        return {**record, **score_suite(model, instructions, tasks), "wall_s": time.perf_counter() - started}
    train_options = {k: v for k, v in options.items() if k != "model"}
    output_dir = runs_dir / f"{name}@{E}"
    config = TrainingConfig(
        **{**BUDGET, **train_options}, prompting_model=P, embedding_model=E, output_dir=str(output_dir),
        do_eval=False, logging_steps=1, save_steps=10_000, save_model=True, show_progress_bar=False,
        device="cpu", **({"method": "promptembedder"} if kind == "pe" else {}))
    model = build_pe(options, E, device) if kind == "pe" else None
    trainer = Trainer(config, model=model)
    result = trainer.train()
    batches = make_batches(trainer.examples, config.batch_size, config.seed, 0)[: result.steps]
    sources = [SOURCE_NAMES.get(trainer.examples[b[0]].instruction, "?") for b in batches]
    record.update(steps=result.steps, train_s=train_time(output_dir / "log.csv"),
                  median_step_s=result.median_step_time_s, trainable_parameters=result.trainable_parameters,
                  peak_memory_mb=result.peak_memory_mb, log=str(output_dir / "log.csv"), source_per_step=sources)
    return {**record, **score_suite(trainer.model, instructions), "wall_s": time.perf_counter() - started}


def run(args: argparse.Namespace) -> None:
    for name in args.rows:
        parse(name)  # every name is checked before anything runs
    tasks = tuple(args.tasks.split(",")) if args.tasks else TASK_ORDER
    if tasks != TASK_ORDER and any(parse(name)[0] != "eval" for name in args.rows):
        raise SystemExit("--tasks is for evaluation-only rows (a trained row is always scored on all six)")
    for name in args.rows:
        key = f"{name}@{E}" + ("" if tasks == TASK_ORDER else f"[{','.join(tasks)}]")
        if key in done(args.results) or not claim(args.runs_dir, key):
            continue
        print(f"== {key}", flush=True)
        try:
            append(args.results, {"key": key, **run_row(name, args.runs_dir, tasks)})
        except Exception as err:  # one failed row must not stop the queue; it is rerun on restart
            print(f"FAILED {key}: {type(err).__name__}: {err}", flush=True)


def probe(args: argparse.Namespace) -> None:
    """A saved PromptEmbedder row scored on 20NG (or `--tasks`) with other instructions: a seen one (STS's) and none
    at all. Where P writes one prompt for all instructions, the scores do not move."""
    from promptembedder import PromptEmbedder

    model = PromptEmbedder.from_pretrained(args.runs_dir / f"{args.row}@{E}" / "final", device="cpu")
    for task in args.tasks.split(","):
        short = "20ng" if task == "twentynewsgroups" else task  # round 3's keys
        for label, instruction in (("sts-instruction", STS_INSTRUCTION), ("no-instruction", None)):
            key = f"{args.row}@{E}[{short}:{label}]"
            if key in done(args.results):
                continue
            started = time.perf_counter()
            scored = score_suite(model, {task: instruction}, (task,))
            append(args.results, {"key": key, "name": args.row, "instructions": True, f"instruction_{short}": label,
                                  **scored, "wall_s": time.perf_counter() - started})


def rows_of(results: Path) -> list[dict]:
    return [r for r in map(json.loads, filter(str.strip, results.read_text().splitlines())) if "mean" in r]


def generalisation(args: argparse.Namespace) -> None:
    """20 Newsgroups (instruction never trained on) for every row that scored it, with the instruction it read."""
    rows = [r for r in map(json.loads, filter(str.strip, args.results.read_text().splitlines()))
            if "twentynewsgroups" in r.get("scores", {})]
    print("| row | 20NG V-measure | instruction at evaluation |")
    print("|---|---|---|")
    for r in rows:
        said = r.get("instruction_20ng") or ("its 20NG instruction" if r["instructions"] else "none")
        print(f"| {r['key'].split('@')[0]} | {r['scores']['twentynewsgroups']:.1f} | {said} |")


def table(args: argparse.Namespace) -> None:
    """The main table (six scores, mean, % of LoRA's mean, costs) in the order the runs finished."""
    rows = rows_of(args.results)
    lora = next((r["mean"] for r in rows if r["name"] == "lora"), None)
    print("| row | " + " | ".join(TASK_ORDER) + " | mean | % of LoRA | trainable | train s | median step s | "
          "peak MB | eval s |")
    print("|---" * (len(TASK_ORDER) + 8) + "|")
    for r in rows:
        share = f"{100 * r['mean'] / lora:.0f} %" if lora else "-"
        cost = ([f"{r['trainable_parameters']:,}", f"{r['train_s']:.0f}", f"{r['median_step_s']:.1f}",
                 f"{r['peak_memory_mb']:.0f}"] if "train_s" in r else ["0", "-", "-", "-"])
        print(f"| {r['name']} | " + " | ".join(f"{r['scores'][t]:.1f}" for t in TASK_ORDER)
              + f" | {r['mean']:.1f} | {share} | " + " | ".join(cost) + f" | {r['eval_s']:.0f} |")


def bar_positions(n: int, count: int) -> list[float]:
    """x of the n-th of ``count`` side-by-side bars over each task and the mean (the group is 0.8 wide)."""
    return [i + (n - (count - 1) / 2) * 0.8 / count for i in range(len(TASK_ORDER) + 1)]


def plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rows_of(args.results)
    fig, ax = plt.subplots(figsize=(15, 5))
    width = 0.8 / len(rows)
    for n, r in enumerate(rows):
        xs = bar_positions(n, len(rows))
        ax.bar(xs, [r["scores"][t] for t in TASK_ORDER] + [r["mean"]], width=width, label=r["name"])
    ax.set_xticks(range(len(TASK_ORDER) + 1), [*TASK_ORDER, "mean"])
    ax.set(ylabel="main score x100 (seeded subset)",
           title=f"Frozen {E} as E, P = {P}: {BUDGET['max_steps']} steps x batch {BUDGET['batch_size']}, "
                 "four training sources; 20NG's instruction unseen")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: many rows would hide bars
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(args.out)


def full(args: argparse.Namespace) -> None:
    """Rows scored on the full sets (`promptembedder evaluate <row>/final --tasks all --output X.json`) against
    the same rows' subset scores: a table (% of LoRA on each) and a plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subset = {r["key"]: r for results in args.results for r in rows_of(results)}
    rows = []
    for path in args.evaluations:
        for entry in json.loads(path.read_text())["models"]:
            key = Path(entry["model"]).parent.name  # <runs-dir>/<row>@<E>/final
            if key not in subset:
                raise SystemExit(f"{path}: {key!r} has no subset row in {', '.join(map(str, args.results))}")
            scores = {t: entry["scores"][t]["main_score"] for t in TASK_ORDER}
            rows.append((key.split("@")[0], scores, sum(scores.values()) / len(scores), subset[key]))
    lora = next(((mean, sub["mean"]) for name, _, mean, sub in rows if name.startswith("lora")), None)
    print("| row | " + " | ".join(TASK_ORDER) + " | mean (full) | % of LoRA (full) | mean (subsets) | "
          "% of LoRA (subsets) |")
    print("|---" * (len(TASK_ORDER) + 5) + "|")
    for name, scores, mean, sub in rows:
        pairs = zip((mean, sub["mean"]), lora, strict=True) if lora else ()
        shares = [f"{100 * m / ref:.1f} %" for m, ref in pairs] or ["-", "-"]
        print(f"| {name} | " + " | ".join(f"{scores[t]:.1f} ({sub['scores'][t]:.1f})" for t in TASK_ORDER)
              + f" | {mean:.1f} | {shares[0]} | {sub['mean']:.1f} | {shares[1]} |")
    fig, ax = plt.subplots(figsize=(13, 4.5))
    width = 0.8 / len(rows)
    for n, (name, scores, mean, sub) in enumerate(rows):
        xs = bar_positions(n, len(rows))
        ax.bar(xs, [scores[t] for t in TASK_ORDER] + [mean], width=width, label=f"{name}, full sets")
        ax.scatter(xs, [sub["scores"][t] for t in TASK_ORDER] + [sub["mean"]], marker="_", s=200, zorder=3,
                   color="black", label="the same row on the seeded subsets" if n == 0 else None)
    ax.set_xticks(range(len(TASK_ORDER) + 1), [*TASK_ORDER, "mean"])
    ax.set(ylabel="main score x100", title=f"Frozen {E} as E, {BUDGET['max_steps']} steps: full sets (bars) "
                                          "against the seeded subsets (black ticks)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("run", "table", "plot", "describe", "generalisation", "probe", "full"):
        p = sub.add_parser(command)
        if command == "full":  # rows may come from several rounds' files; where a key repeats, the last wins
            p.add_argument("--results", type=Path, required=True, nargs="+")
        elif command != "describe":
            p.add_argument("--results", type=Path, required=True)
    for command in ("run", "probe"):
        sub.choices[command].add_argument("--runs-dir", type=Path, required=True)
    sub.choices["probe"].add_argument("row", help="a PromptEmbedder row already run, e.g. pe-prefix")
    sub.choices["probe"].add_argument("--tasks", default="twentynewsgroups", help="comma-separated, of the six")
    sub.choices["run"].add_argument("rows", nargs="+")
    sub.choices["run"].add_argument("--tasks", help="comma-separated subset of the six (evaluation-only rows)")
    sub.choices["plot"].add_argument("--out", type=Path, required=True)
    sub.choices["full"].add_argument("--out", type=Path, required=True)
    sub.choices["full"].add_argument("evaluations", nargs="+", type=Path, help="promptembedder evaluate --output files")
    args = parser.parse_args()
    if args.command == "describe":
        print(json.dumps(describe(), indent=1))
        return
    commands = {"run": run, "table": table, "plot": plot, "generalisation": generalisation, "probe": probe,
                "full": full}
    commands[args.command](args)


if __name__ == "__main__":
    main()
