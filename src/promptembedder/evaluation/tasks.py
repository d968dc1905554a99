"""The task registry: one `TaskSpec` entry per task says how to load it, how to score it and how to instruct it.

Adding a task is one entry in `TASKS` (see README "Adding a task"): a loader returning the data its type's scorer
takes (STS pairs, `RetrievalData`, `ClassificationData`, labelled pairs, labelled texts) and its task type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..data.datasets import STS_INSTRUCTION, load_sick, load_sts
from ..data.instructions import SUITE_PROMPTS
from ..data.task_sets import load_banking77, load_mrpc, load_scifact, load_twentynewsgroups
from ..models.embedder import include_prompts
from .classification import ClassificationData
from .nli_follow import InstructionFollowingData, follow_items
from .unseen_tasks import load_unseen_tasks
from .unseen_wording import load_unseen_wording

#: Task types, their main metric, and the short names `--tasks` accepts for each.
TASK_TYPES: dict[str, str] = {
    "sts": "spearman",
    "retrieval": "ndcg_at_10",
    "classification": "accuracy",
    "pair_classification": "max_ap",
    "clustering": "v_measure",
    "instruction_following": "paired_accuracy",
    "unseen_tasks": "accuracy",
    "unseen_wording": "accuracy",
}
TYPE_ALIASES = {"sts": "sts", "retrieval": "retrieval", "classification": "classification",
                "pair": "pair_classification", "pair_classification": "pair_classification",
                "clustering": "clustering", "instruction_following": "instruction_following",
                "unseen_tasks": "unseen_tasks", "unseen_wording": "unseen_wording"}
#: The instruction tests: `--tasks instructions`, left out of `all` (they encode each text under several
#: instructions, many times the six MTEB-style tasks' cost on a CPU).
INSTRUCTION_TYPES = ("instruction_following", "unseen_tasks", "unseen_wording")
TYPE_TITLES = {"sts": "STS (Spearman x100)", "retrieval": "Retrieval (nDCG@10 x100)",
               "classification": "Classification (accuracy x100)",
               "pair_classification": "Pair classification (max AP x100)", "clustering": "Clustering (V-measure x100)",
               "instruction_following": "Instruction following (paired accuracy x100, 50 = ignores it)",
               "unseen_tasks": "Unseen tasks (mean probe accuracy x100)",
               "unseen_wording": "Unseen wording (mean probe accuracy x100 under held-out wordings)"}


@dataclass(frozen=True)
class TaskSpec:
    """A task: where its data comes from, which splits exist, its type and its default (query-side) instruction.

    ``document_prompt_type`` is the prompt type the second side gets: "document" (with no instruction) for
    asymmetric retrieval, "query" (with the instruction) for symmetric types. ``train_source`` names the
    `--train-data` source built from this task's training split: a model trained on it is in-domain here.
    """

    name: str
    mteb_name: str
    splits: tuple[str, ...]
    loader: Callable[[str], Any]
    instruction: str | None = STS_INSTRUCTION
    type: str = "sts"
    document_prompt_type: str = "query"
    train_source: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in TASK_TYPES:
            raise ValueError(f"task {self.name!r}: unknown type {self.type!r} (known: {', '.join(TASK_TYPES)})")

    @property
    def metric(self) -> str:
        return TASK_TYPES[self.type]

    def load(self, split: str) -> Any:
        """The task's data for ``split``; an unknown split is an error, never an empty evaluation."""
        if split not in self.splits:
            raise ValueError(
                f"task {self.name!r} has no split {split!r} (valid: {', '.join(self.splits)})"
                + (" -- MTEB scores all of SICK as its test set" if self.name == "sick-r" else "")
            )
        return self.loader(split)


def _sick(split: str) -> Any:
    return load_sick()


def _banking77(split: str) -> ClassificationData:
    return ClassificationData(load_banking77("train"), load_banking77(split))


def _nli_follow(split: str) -> InstructionFollowingData:
    """e-SNLI test premises (no training source reads that file) under the catalogue's training wording of the
    entailment and contradiction tasks, and under their first held-out wording."""
    from ..data.instructions import held_out_instructions, training_instructions

    wordings = {"training": (training_instructions("nli-entailment")[0], training_instructions("nli-contradiction")[0]),
                "held_out": (held_out_instructions("nli-entailment")[0],
                             held_out_instructions("nli-contradiction")[0])}
    return InstructionFollowingData(follow_items(split), wordings)


def _suite(name: str, mteb_name: str, splits: tuple[str, ...], loader: Callable[[str], Any], type: str = "sts",
           **options: Any) -> TaskSpec:
    """A task of the evaluation suite, instructed as `data.instructions.SUITE_PROMPTS` says (training reads it too)."""
    prompt = SUITE_PROMPTS[name]
    return TaskSpec(name, mteb_name, splits, loader, prompt.instruction, type, prompt.document_prompt_type, **options)


TASKS: dict[str, TaskSpec] = {
    "sts-b": _suite("sts-b", "STSBenchmark", ("train", "dev", "test"), load_sts, train_source="sts-train",
                    description="sentence-pair similarity 0-5 (news, captions, forums)"),
    "sick-r": _suite("sick-r", "SICK-R", ("test",), _sick, description="sentence-pair relatedness 1-5"),
    "scifact": _suite("scifact", "SciFact", ("train", "dev", "test"), load_scifact, "retrieval",
                      train_source="scifact-train", description="find the abstracts that support or refute a claim "
                                                                "among 5,183"),
    "banking77": _suite("banking77", "Banking77Classification", ("test",), _banking77, "classification",
                        train_source="banking77-train", description="77-way intent of banking queries, 8-shot probe"),
    "mrpc": _suite("mrpc", "MRPC", ("train", "test"), load_mrpc, "pair_classification", train_source="mrpc-train",
                   description="is the sentence pair a paraphrase (news)"),
    "twentynewsgroups": _suite("twentynewsgroups", "TwentyNewsgroupsClustering", ("train", "test"),
                               load_twentynewsgroups, "clustering",
                               description="cluster 7,532 post subjects into 20 newsgroups"),
    "nli-follow": TaskSpec("nli-follow", "", ("test",), _nli_follow, None, "instruction_following",
                           description="2,921 e-SNLI test premises: the entailed hypothesis nearer under the "
                                       "entailment instruction, the contradicted one under the contradiction one"),
    "unseen-tasks": TaskSpec("unseen-tasks", "", ("test",), load_unseen_tasks, None, "unseen_tasks",
                             description="10 licl tasks and 20NG never trained on, each under its own instruction"),
    "unseen-wording": TaskSpec("unseen-wording", "", ("test",), load_unseen_wording, None, "unseen_wording",
                               description="the trained licl tasks under held-out wordings against their training "
                                           "wording"),
}


include_prompts(TASKS)  # encode_query(prompt_name=...) resolves every task here, one a user adds too


def get_task(name: str) -> TaskSpec:
    """Look a task up by name (case-insensitive), with an error that lists what exists."""
    if not isinstance(name, str):
        raise TypeError(f"task names must be strings, got {type(name).__name__}")
    spec = TASKS.get(name.lower())
    if spec is None:
        raise ValueError(f"unknown task {name!r} (known tasks: {', '.join(TASKS)}; "
                         f"or: all, instructions, {', '.join(sorted(set(TYPE_ALIASES) - {'pair_classification'}))})")
    return spec


def select_tasks(selection: str) -> list[str]:
    """``all`` (the MTEB-style tasks), ``instructions`` (the instruction tests), a task type (``sts``,
    ``retrieval``, ``classification``, ``pair``, ``clustering``, ...) or task names, comma-separated, into task names
    in registry order, each once."""
    names: list[str] = []
    items = [item.strip() for item in selection.split(",") if item.strip()]
    if not items:
        raise ValueError("no tasks given (use --tasks all, a type such as sts, or task names)")
    for item in items:
        key = item.lower()
        if key == "all":
            names.extend(name for name, spec in TASKS.items() if spec.type not in INSTRUCTION_TYPES)
        elif key == "instructions":
            names.extend(name for name, spec in TASKS.items() if spec.type in INSTRUCTION_TYPES)
        elif key in TYPE_ALIASES and key not in TASKS:
            names.extend(name for name, spec in TASKS.items() if spec.type == TYPE_ALIASES[key])
        else:
            names.append(get_task(item).name)
    return list(dict.fromkeys(names))
