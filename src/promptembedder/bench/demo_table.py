"""The demo's rows and its one table: scores on the seeded subsets, costs, and the budget they were measured at.

Every row is scored on the six-task quick suite (`score_suite`); all but the transfer stage's also on nli-follow and
unseen tasks (`score_instruction_suite`), under those tasks' own instructions as `promptembedder evaluate` gives
them whatever the row's six-task setting: bare E and PromptEOL read them as text, while a static soft prompt or a
bare encoder (MiniLM) cannot read them and so scores 50 on nli-follow. The table's caption states the budget, so a
reading is never quoted without it.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from ..data.instructions import unseen_tasks
from ..evaluation import TASKS
from ..models.embedder import Embedder
from .demo_config import DemoConfig
from .subsets import InstructionSizes, score_instruction_suite, score_suite

SHORT = {"pair_classification": "pair", "classification": "classif."}
LORA_ON_E = "LoRA r=8 on E"
W_ONLY, LORA_FROM_SCRATCH = "transfer: P frozen, new W only", "LoRA from scratch on E'"
PT_FROM_SCRATCH = "prompt tuning from scratch on E'"


class Results:
    """The table's rows: each one's scores on the subsets (and on the instruction tests), its backbone, its costs."""

    def __init__(self, console: Console):
        self.console = console
        self.scores: dict[str, dict] = {}
        self.instructed: dict[str, dict] = {}
        self.costs: dict[str, dict] = {}
        self.backbones: dict[str, str] = {}

    def score(self, name: str, model: Embedder, backbone: str, instructions: bool, tasks: tuple[str, ...],
              instruction_sizes: InstructionSizes | None = None) -> None:
        """The six-task scores (`instructions`: the registry's or none), then nli-follow and unseen tasks when
        `instruction_sizes` is given."""
        self.console.print(f"{name} ({backbone}):")
        self.scores[name] = score_suite(model, instructions, tasks, log=self.console.print)["scores"]
        self.backbones[name] = backbone
        if instruction_sizes is not None:
            scored = score_instruction_suite(model, instruction_sizes, log=self.console.print)
            self.instructed[name] = instruction_summary(scored)


def instruction_summary(scored: dict[str, Any]) -> dict[str, Any]:
    """What the table and the report keep of `score_instruction_suite`'s answer."""
    nli, unseen = scored["nli_follow"], scored["unseen_tasks"]
    return {"nli_follow": nli["paired_accuracy"], "entailment": nli["entailment"],
            "contradiction": nli["contradiction"],
            "nli_follow_documents_without_instruction": nli["documents_without_instruction"]["paired_accuracy"],
            "nli_follow_by_wording": {name: w["paired_accuracy"] for name, w in nli["wordings"].items()},
            "unseen_tasks": unseen["main_score"], "unseen_per_task": unseen["per_task"],
            "eval_s": scored["eval_s_per_task"]}


def type_scores(scores: dict[str, float]) -> dict[str, float]:
    """The mean main score per task type (STS averages STS-B and SICK-R), in the registry's order."""
    by_type: dict[str, list[float]] = {}
    for task, value in scores.items():
        by_type.setdefault(TASKS[task].type, []).append(value)
    return {kind: sum(values) / len(values) for kind, values in by_type.items()}


def budget_caption(config: DemoConfig, tasks: tuple[str, ...], instructed: bool) -> str:
    """Steps x batch, max length, training sources, seed and subsets, in words."""
    runs = (f"transfer runs {config.transfer_steps} steps" if config.transfer_only else
            f"{config.steps} steps x batch {config.batch_size} per method on E (transfer runs {config.transfer_steps})")
    lines = [f"Budget: {runs}, max length {config.max_length} tokens, trained on {', '.join(config.train_data)}, "
             f"one seed ({config.seed}).",
             f"Subsets (seeded, bench/subsets.py): {', '.join(tasks)}."]
    sizes = config.instruction_sizes
    if instructed and sizes is not None:
        wordings = "every" if sizes.nli_wordings is None else "/".join(sizes.nli_wordings)
        licl = sum(task.startswith("licl/") for task in unseen_tasks())
        lines.append(f"nli-follow: {sizes.nli_items} e-SNLI test premises, {wordings} wording, paired accuracy "
                     "(entailment/contradiction); 50 = ignores the instruction. Unseen tasks: "
                     f"{licl} licl tasks x {sizes.licl_test} test texts + 20NG {sizes.newsgroups_test}, probe "
                     f"{sizes.n_experiments} x {sizes.samples_per_label} per label. Both under the tasks' own "
                     "instructions for every row.")
    return "\n".join(lines)


def results_table(results: Results, config: DemoConfig, tasks: tuple[str, ...]) -> Table:
    """Score per task type, the mean over tasks, % of LoRA on the same backbone and tasks, nli-follow and unseen
    tasks where scored, and the costs; the caption states the budget."""
    types = list(dict.fromkeys(TASKS[t].type for t in tasks))
    instructed = bool(results.instructed)
    steps = config.transfer_steps if config.transfer_only else config.steps
    table = Table(title=f"PromptEmbedder demo: main score x100 on seeded subsets, {steps} steps x {config.batch_size}"
                        ", one seed (experiments/regime/LOG.md)",
                  caption=budget_caption(config, tasks, instructed), caption_justify="left")
    extra = ("nli-follow (ent/con)", "unseen tasks") if instructed else ()
    for column in ("model", "backbone", *(SHORT.get(t, t) for t in types), "mean", "% of LoRA", *extra, "trainable",
                   "s/step", "peak MB"):
        table.add_column(column, justify="left" if column in ("model", "backbone") else "right")
    lora_of = {config.embedding_model: LORA_ON_E, config.transfer_model: LORA_FROM_SCRATCH}
    for name, task_scores in results.scores.items():
        by_type, mean = type_scores(task_scores), sum(task_scores.values()) / len(task_scores)
        lora = results.scores.get(lora_of.get(results.backbones[name], ""))
        share = "-"
        if lora:
            shared = [t for t in task_scores if t in lora]
            share = f"{100 * sum(task_scores[t] for t in shared) / sum(lora[t] for t in shared):.1f}"
        row = results.instructed.get(name)
        follow = ((f"{row['nli_follow']:.1f} ({row['entailment']:.1f}/{row['contradiction']:.1f})",
                   f"{row['unseen_tasks']:.2f}") if row else ("-", "-")) if instructed else ()
        cost = results.costs.get(name, {})
        table.add_row(name, results.backbones[name], *(f"{by_type[k]:.2f}" if k in by_type else "-" for k in types),
                      f"{mean:.2f}", share, *follow, f"{cost.get('trainable', 0):,}",
                      f"{cost['step_s']:.2f}" if "step_s" in cost else "-",
                      f"{cost['peak_mb']:.0f}" if "peak_mb" in cost else "-")
    return table
