"""Issue 29's experiment: train on `multitask`, then score what only an instruction-aware embedder can do.

Rows (E = Gemma 3 270M, frozen unless LoRA; P = SmolLM2-135M):
  pe     PromptEmbedder, suffix prompt, P lr 1e-4, W lr 1e-2, no diversity term
  pt     one static soft prompt (prompt tuning, suffix), lr 3e-3
  table  a table of static prompts, one per training instruction (prompt-table, suffix), lr 3e-3
  lora   LoRA r=8 on E with the instruction as E5-style text, lr 2e-4
  bare   bare E (last token) with the instruction as E5-style text, no training
  prompteol  bare E in PromptEOL's template with the instruction as text, no training
Levers appended with "+": seed7, seed1234 (other seeds), div1 (the prompt-diversity term at weight 1), lr3e-2 (the
learning rate 10x prompt tuning's: a table row is in few batches, ~2 of 300 on average), lr1e-3 (P's learning
rate 10x pe's), plaindocs (training reads the NLI hypotheses as documents, without the instruction, as FollowIR and
MTEB read a corpus: only the premise's side can follow the instruction, and one hypothesis embedding must serve both
directions), nlionly (train on `nli-contrastive` alone: twice the NLI batches of the mix, nothing else), deep (P's
prompt as a prefix of every layer's keys and values in E, not 5 input tokens: more reach for the same P), nonoise (P's
soft tokens in training without Gumbel draws, as at inference), gentle (P's and W's learning rates 10x and 100x
below pe's, to fine-tune from a start that already follows: from_table.py), frozenp and frozenw (P or W kept as
it starts), still (learning rates of 1e-12: the loss of the start itself on each batch), onewording (each NLI task
read under its first training wording only: a table then has one row per direction, each in half the batches).
Every row also gets `nli_follow_plain`: nli-follow with the hypotheses read so (`plain_reading`).

Every trained row gets `BUDGET`; every row is scored on the same seeded subsets (`EVAL`): nli-follow (e-SNLI test
premises, training and held-out wordings) and unseen tasks (the catalogue's ten held-out licl tasks + 20NG), both
`bench.subsets.instruction_subsets` as the demo uses them, at this file's sizes; unseen wording (four trained licl
tasks, training wording against licl's instruction_2) and the six-task quick suite (`bench.subsets`). One JSON line
per row goes to --results; a row already there is skipped.

    OMP_NUM_THREADS=1 python experiments/instructions/run.py run --results R.jsonl --runs-dir runs pe pt

The tables and the plot: `report.py`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import random
import time
import traceback
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch

from promptembedder.bench.subsets import InstructionSizes, score_instruction_suite, score_suite
from promptembedder.data.instructions import catalogue, training_instructions
from promptembedder.data.sources import load_training_data
from promptembedder.evaluation.unseen_tasks import InstructedTask, evaluate_unseen_tasks
from promptembedder.evaluation.unseen_wording import evaluate_unseen_wording, load_unseen_wording
from promptembedder.models.baselines import PROMPTEOL_TEMPLATE, BackboneEmbedder
from promptembedder.models.config import BaselineConfig
from promptembedder.models.embedder import Embedder
from promptembedder.training import Trainer, TrainingConfig
from promptembedder.training.build import bare_embedder
from promptembedder.training.state import TrainResult

E, P = "gemma3-270m", "smollm2-135m"
#: `multitask` plus its own NLI tasks again at half the mix: at 40 steps `multitask` alone gives 3 NLI batches
#: (1,340 batches of 54 tasks), too few for nli-follow to measure anything but the budget.
BUDGET = dict(max_steps=40, batch_size=16, max_length=48, seed=42, train_data=["multitask", "nli-contrastive"],
              task_weights={"multitask": 1.0, "nli-contrastive": 1.0})
#: The evaluation subsets (seeded with random.Random(0)); the probe draws as MTEB's, fewer of them.
EVAL = dict(nli_items=100, licl_test=40, newsgroups_pool_per_label=10, newsgroups_test=200, wording_tasks=4,
            n_experiments=2, samples_per_label=8)
SIZES = InstructionSizes(**{k: v for k, v in EVAL.items() if k != "wording_tasks"})
ROWS: dict[str, tuple[str | None, dict]] = {
    "pe": ("promptembedder", {"prompt_position": "suffix", "learning_rate": 1e-4, "alignment_learning_rate": 1e-2}),
    "pt": ("prompt-tuning", {"prompt_position": "suffix"}),
    "table": ("prompt-table", {"prompt_position": "suffix"}),
    "lora": ("lora", {}),
    "bare": (None, {"pooling": "last"}),
    "prompteol": (None, {"pooling": "last", "template": PROMPTEOL_TEMPLATE}),
}
LEVERS = {"seed7": {"seed": 7}, "seed1234": {"seed": 1234}, "div1": {"prompt_diversity": 1.0},
          "lr3e-2": {"learning_rate": 3e-2}, "lr1e-3": {"learning_rate": 1e-3}, "plaindocs": {},
          "nlionly": {"train_data": ["nli-contrastive"], "task_weights": None}, "deep": {"prompt_position": "deep"},
          "nonoise": {"gumbel_noise": False}, "gentle": {"learning_rate": 1e-5, "alignment_learning_rate": 1e-4},
          "frozenp": {"prompting_trainable": "frozen"}, "frozenw": {"train_alignment": False},
          "still": {"learning_rate": 1e-12, "alignment_learning_rate": 1e-12}, "onewording": {}}
NLI_TASKS = ("nli-entailment", "nli-contradiction")
#: Rows whose model cannot read an instruction: the wording test is 0 by construction and is not encoded twice.
STATIC = ("pt",)


def parse(name: str) -> tuple[str | None, dict]:
    base, *levers = name.split("+")
    if base not in ROWS or any(lever not in LEVERS for lever in levers):
        raise SystemExit(f"unknown row {name!r}: rows {list(ROWS)}, levers {list(LEVERS)}")
    method, options = ROWS[base]
    for lever in levers:
        options = {**options, **LEVERS[lever]}
    return method, options


@cache
def wording_data() -> list[InstructedTask]:
    """Unseen wording's subset: four trained licl tasks (seeded), their training wording and instruction_2."""
    trained = sorted(t for t in catalogue().train if t.startswith("licl/"))
    return load_unseen_wording(tasks=random.Random(0).sample(trained, EVAL["wording_tasks"]), held_out=1,
                               test=EVAL["licl_test"])


def plain_reading(nli_follow: dict) -> dict[str, dict]:
    """nli-follow per wording with the hypotheses read without the instruction (the evaluation's second reading):
    only the premise's embedding can change with it, so ignoring it still scores 50."""
    keep = ("entailment_instruction", "contradiction_instruction")
    return {name: {**w["documents_without_instruction"], **{k: w[k] for k in keep}}
            for name, w in nli_follow["wordings"].items()}


def score(model: Embedder, static: bool, log=print) -> dict:
    probe = {k: EVAL[k] for k in ("n_experiments", "samples_per_label")}
    instructed = score_instruction_suite(model, SIZES, batch_size=32, log=log)
    out, seconds = {k: instructed[k] for k in ("nli_follow", "unseen_tasks")}, dict(instructed["eval_s_per_task"])
    out["nli_follow_plain"] = plain_reading(out["nli_follow"])
    log(f"  nli-follow, hypotheses without the instruction: {out['nli_follow_plain']['training']}")
    start = time.perf_counter()
    if static:  # one encoding per task: every wording gives the same embeddings
        one = [type(t)(t.name, t.data, t.instructions[:1]) for t in wording_data()]
        same = evaluate_unseen_tasks(model, one, batch_size=32, **probe)
        out["unseen_wording"] = {"main_score": same["main_score"], "training_wording": same["main_score"],
                                 "drop": 0.0, "per_task": same["per_task"], "by_construction": True}
    else:
        out["unseen_wording"] = evaluate_unseen_wording(model, wording_data(), batch_size=32, **probe)
    seconds["unseen_wording"] = time.perf_counter() - start
    log(f"  unseen wording {out['unseen_wording']['main_score']:.2f}, drop {out['unseen_wording']['drop']:.2f} "
        f"({seconds['unseen_wording']:.0f} s)")
    out["six"] = score_suite(model, True, log=log)
    seconds["six"] = out["six"]["eval_s"]
    return {"scores": out, "eval_s": seconds, "eval_total_s": sum(seconds.values())}


def train_seconds(log: Path) -> float:
    with open(log, newline="") as handle:
        return sum(float(r["step_time_s"]) for r in csv.DictReader(handle) if r.get("step_time_s"))


def row_config(name: str, runs_dir: Path) -> TrainingConfig:
    """A trained row's settings: `BUDGET` with its levers, kept in `<runs_dir>/<row>@<E>`."""
    method, options = parse(name)
    return TrainingConfig(**{**BUDGET, **options}, method=method, prompting_model=P, embedding_model=E,
                          output_dir=str(runs_dir / f"{name}@{E}"), do_eval=False, logging_steps=1,
                          save_steps=10_000, save_model=True, show_progress_bar=False, device="cpu")


def train_row(name: str, runs_dir: Path, model: Embedder | None = None,
              prepare: Callable[[Trainer], None] | None = None) -> tuple[Trainer, TrainResult, Path]:
    """Train a row at `BUDGET` (from `model` when given, else from its method's start); its model is kept in
    `<runs_dir>/<row>@<E>/final`. `prepare` sees the trainer before it trains (e.g. to add a term to its loss)."""
    config = row_config(name, runs_dir)
    output_dir = Path(config.output_dir)
    examples, levers = None, name.split("+")
    if "plaindocs" in levers or "onewording" in levers:
        nli = {training_instructions(task) for task in NLI_TASKS}
        change = {"document_prompt_type": "document"} if "plaindocs" in levers else {}
        first = "onewording" in levers
        examples = [dataclasses.replace(e, **change, instructions=e.instructions[:1] if first else e.instructions)
                    if e.instructions in nli else e
                    for e in load_training_data(config.train_data, embedding_model=E, task_weights=config.task_weights,
                                                negatives_model=lambda: bare_embedder(E))]
    trainer = Trainer(config, model=model, examples=examples)
    if prepare:
        prepare(trainer)
    return trainer, trainer.train(), output_dir


def run_row(name: str, runs_dir: Path) -> dict:
    method, options = parse(name)
    started = time.perf_counter()
    record: dict = {"name": name, "method": method, "options": options, "embedding_model": E, "eval": EVAL}
    if method is None:
        model = BackboneEmbedder(BaselineConfig(method=name, embedding_model=E, max_length=BUDGET["max_length"],
                                                **options), device="cpu")
        return {**record, **score(model, False), "wall_s": time.perf_counter() - started}
    trainer, result, output_dir = train_row(name, runs_dir)
    record.update(training_record(name, trainer, result, output_dir))
    return {**record, **score(trainer.model, method in ("prompt-tuning",)), "wall_s": time.perf_counter() - started}


def training_record(name: str, trainer: Trainer, result: TrainResult, output_dir: Path) -> dict:
    """What a trained row's record keeps of its training: budget, steps, seconds, P's prompt cosine, the log."""
    _, options = parse(name)
    summary = json.loads((output_dir / "train_summary.json").read_text()) if (
        output_dir / "train_summary.json").is_file() else {}
    return dict(budget={**BUDGET, **{k: v for k, v in options.items() if k in BUDGET}}, steps=result.steps,
                train_s=train_seconds(output_dir / "log.csv"), median_step_s=result.median_step_time_s,
                trainable_parameters=result.trainable_parameters, training_instructions=len(trainer.instructions),
                prompt_cosine=(summary.get("instructions") or {}).get("prompt_cosine"),
                log=str(output_dir / "log.csv"))


def done(results: Path) -> set[str]:
    if not results.exists():
        return set()
    return {json.loads(line)["key"] for line in results.read_text().splitlines() if line.strip()}


def run(args: argparse.Namespace) -> None:
    BUDGET["max_steps"] = args.max_steps
    for name in args.rows:
        parse(name)
    torch.manual_seed(0)
    for name in args.rows:
        key = f"{name}@{E}"
        claim = args.runs_dir / f"{key}.claimed"
        if key in done(args.results):
            continue
        args.runs_dir.mkdir(parents=True, exist_ok=True)
        try:
            claim.touch(exist_ok=False)
        except FileExistsError:
            continue
        print(f"== {key}", flush=True)
        try:
            record = {"key": key, **run_row(name, args.runs_dir)}
        except Exception as err:  # one failed row must not stop the queue; it is rerun on restart
            claim.unlink(missing_ok=True)
            print(f"FAILED {key}: {type(err).__name__}: {err}", flush=True)
            traceback.print_exc()
            continue
        with open(args.results, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(json.dumps({k: record[k] for k in ("key", "eval_total_s", "wall_s")}), flush=True)


def train_only(args: argparse.Namespace) -> None:
    """Train rows and keep their models unscored, for `promptembedder evaluate --tasks all` on the full sets; a row
    whose model is already there is skipped."""
    BUDGET["max_steps"] = args.max_steps
    for name in args.rows:
        if parse(name)[0] is None:
            raise SystemExit(f"row {name!r} has nothing to train")
    torch.manual_seed(0)
    for name in args.rows:
        final = args.runs_dir / f"{name}@{E}" / "final"
        if final.exists():
            print(f"{final} exists: skipped", flush=True)
            continue
        print(f"== {name}@{E}", flush=True)
        _, result, _ = train_row(name, args.runs_dir)
        print(f"trained {result.steps} steps, median step {result.median_step_time_s:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--runs-dir", type=Path, default=Path("runs/instructions"))
    p.add_argument("--max-steps", type=int, default=BUDGET["max_steps"], help="steps of batch 16 per trained row")
    p.add_argument("rows", nargs="+")
    p.set_defaults(func=run)
    p = sub.add_parser("train")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/instructions"))
    p.add_argument("--max-steps", type=int, default=BUDGET["max_steps"], help="steps of batch 16 per trained row")
    p.add_argument("rows", nargs="+")
    p.set_defaults(func=train_only)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
