"""The six-task quick suite (the demo, experiments/regime/): seeded subsets of every task, scored by the usual scorers.

Gemma 3 270M embeds about 7 short texts a second on one shared CPU thread, so the full six tasks (SciFact's
5,183 abstracts, Banking77's 4,616-text probe pool) cost an hour of one thread per model (58 CPU minutes for a
PromptEmbedder at 48 tokens, experiments/regime/LOG.md). Each task is cut to a documented,
seeded subset (`random.Random(SEED)`), and scored with `evaluation.SCORERS[type]`, i.e. MTEB's procedure on
that subset:

- sts-b: 300 STS Benchmark test pairs (the subset of the earlier 20-step round, unchanged);
- sick-r: 100 SICK pairs;
- scifact: 30 test claims; a corpus of every abstract they cite plus random distractors, 150 documents in all;
- banking77: 20 of the 77 intents; probe pool 10 training texts per intent (MTEB's 10 experiments of 8 per
  label, seed 42, drawn from that pool), 6 test texts per intent;
- mrpc: 150 test pairs;
- twentynewsgroups: 300 test subjects (all 20 newsgroups).

Every text is cut at the model's max_length (48 tokens in the regime runs), SciFact's documents included
(title and the abstract's first sentence or two).

The two instruction evaluations get seeded subsets too (`instruction_subsets`, sized by `InstructionSizes`, each
caller its own: experiments/instructions/run.py 100 premises and 40 test texts per licl task, the demo fewer):

- nli-follow: `nli_items` e-SNLI test premises (`random.Random(SEED)`), under the registered wordings
  (`nli_wordings`, all by default: training, held-out);
- unseen-tasks: the catalogue's ten held-out licl tasks (`licl_test` test texts each, `unseen_tasks.sample`'s seed)
  and 20 Newsgroups (`newsgroups_pool_per_label` training subjects per group, `newsgroups_test` test subjects),
  probed with `n_experiments` draws of `samples_per_label` texts per label.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..data.datasets import load_sick, load_sts
from ..data.instructions import unseen_tasks
from ..data.task_sets import (
    LabelledTexts,
    RetrievalData,
    load_banking77,
    load_mrpc,
    load_scifact,
    load_twentynewsgroups,
)
from ..evaluation.classification import ClassificationData
from ..evaluation.nli_follow import InstructionFollowingData, evaluate_instruction_following
from ..evaluation.runner import SCORERS
from ..evaluation.tasks import get_task
from ..evaluation.unseen_tasks import InstructedTask, evaluate_unseen_tasks, licl_instructed, newsgroups_instructed
from ..models.embedder import Embedder

SEED = 0
SIZES = {"sts-b": 300, "sick-r": 100, "scifact_queries": 30, "scifact_corpus": 150, "banking77_intents": 20,
         "banking77_pool_per_intent": 10, "banking77_test_per_intent": 6, "mrpc": 150, "twentynewsgroups": 300}
TASK_ORDER = ("sts-b", "sick-r", "scifact", "banking77", "mrpc", "twentynewsgroups")


def _scifact() -> RetrievalData:
    data = load_scifact("test")
    queries = random.Random(SEED).sample(sorted(data.qrels), SIZES["scifact_queries"])
    relevant = sorted({d for q in queries for d in data.qrels[q]})
    others = sorted(set(data.corpus) - set(relevant))
    docs = sorted(relevant + random.Random(SEED).sample(others, SIZES["scifact_corpus"] - len(relevant)))
    return RetrievalData({q: data.queries[q] for q in queries}, {d: data.corpus[d] for d in docs},
                         {q: data.qrels[q] for q in queries})


def _per_label(data: LabelledTexts, labels: list[str], n: int, rng: random.Random) -> LabelledTexts:
    """n texts of each label in ``labels``, kept in file order (the probe's sampling depends on it)."""
    chosen = sorted(i for label in labels for i in rng.sample([j for j, y in enumerate(data.labels) if y == label], n))
    return LabelledTexts([data.texts[i] for i in chosen], [data.labels[i] for i in chosen])


def _banking77() -> ClassificationData:
    train, test = load_banking77("train"), load_banking77("test")
    rng = random.Random(SEED)
    intents = rng.sample(sorted(set(test.labels)), SIZES["banking77_intents"])
    return ClassificationData(_per_label(train, intents, SIZES["banking77_pool_per_intent"], rng),
                              _per_label(test, intents, SIZES["banking77_test_per_intent"], rng))


def _twentynewsgroups() -> LabelledTexts:
    data = load_twentynewsgroups("test")
    chosen = sorted(random.Random(SEED).sample(range(len(data.texts)), SIZES["twentynewsgroups"]))
    return LabelledTexts([data.texts[i] for i in chosen], [data.labels[i] for i in chosen])


@cache
def suite() -> dict[str, Any]:
    """Task name -> the subset its scorer takes (loaded once per process)."""
    return {
        "sts-b": random.Random(SEED).sample(load_sts("test"), SIZES["sts-b"]),
        "sick-r": random.Random(SEED).sample(load_sick(), SIZES["sick-r"]),
        "scifact": _scifact(),
        "banking77": _banking77(),
        "mrpc": random.Random(SEED).sample(load_mrpc("test"), SIZES["mrpc"]),
        "twentynewsgroups": _twentynewsgroups(),
    }


def score_suite(model: Embedder, instructions: bool | dict[str, str | None], tasks: tuple[str, ...] = TASK_ORDER,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Main score per task, their mean, and seconds per task.

    ``instructions``: True gives each task its registry instruction, False none, a dict per-task overrides.
    """
    data, scores, seconds = suite(), {}, {}
    for name in tasks:
        spec = get_task(name)
        instruction = (instructions.get(name, spec.instruction) if isinstance(instructions, dict)
                       else spec.instruction if instructions else None)
        options = {"document_prompt_type": spec.document_prompt_type} if spec.type == "retrieval" else {}
        start = time.perf_counter()
        scores[name] = SCORERS[spec.type](model, data[name], instruction, 32, False, **options)["main_score"]
        seconds[name] = round(time.perf_counter() - start, 1)
        log(f"  {name}: {scores[name]:.2f} ({seconds[name]:.0f} s)")
    result: dict[str, Any] = {"scores": scores, "eval_s_per_task": seconds, "eval_s": sum(seconds.values())}
    if set(tasks) == set(TASK_ORDER):
        result["mean"] = sum(scores.values()) / len(scores)
    return result


def describe() -> dict[str, int]:
    """Sizes of the subsets as built (texts to embed, before de-duplication), for the write-up."""
    data = suite()
    return {"sts-b_pairs": len(data["sts-b"]), "sick-r_pairs": len(data["sick-r"]),
            "scifact_queries": len(data["scifact"].queries), "scifact_documents": len(data["scifact"].corpus),
            "scifact_judgments": sum(len(d) for d in data["scifact"].qrels.values()),
            "banking77_pool": len(data["banking77"].train.texts), "banking77_test": len(data["banking77"].test.texts),
            "mrpc_pairs": len(data["mrpc"]), "mrpc_positive": sum(p.label for p in data["mrpc"]),
            "twentynewsgroups_texts": len(data["twentynewsgroups"].texts),
            "twentynewsgroups_groups": len(set(data["twentynewsgroups"].labels))}


@dataclass(frozen=True)
class InstructionSizes:
    """How much of nli-follow and unseen-tasks a caller scores (see the module doc); `nli_wordings` None = all."""

    nli_items: int
    licl_test: int
    newsgroups_pool_per_label: int
    newsgroups_test: int
    n_experiments: int
    samples_per_label: int
    nli_wordings: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("nli_items", "licl_test", "newsgroups_pool_per_label", "newsgroups_test", "n_experiments",
                     "samples_per_label"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"InstructionSizes.{name} must be a positive integer, got {value!r}")
        if self.nli_wordings is not None:  # a list read back from JSON is the same selection
            object.__setattr__(self, "nli_wordings", tuple(self.nli_wordings))
            if not self.nli_wordings:
                raise ValueError("InstructionSizes.nli_wordings must name at least one wording (or be None: all)")


@dataclass(frozen=True)
class InstructionSubsets:
    """nli-follow's sampled premises under the chosen wordings, and the unseen tasks in the catalogue's order."""

    nli: InstructionFollowingData
    unseen: list[InstructedTask]


@cache
def instruction_subsets(sizes: InstructionSizes) -> InstructionSubsets:
    """The seeded subsets (loaded once per process and sizes)."""
    nli = get_task("nli-follow").load("test")
    if sizes.nli_items > len(nli.items):
        raise ValueError(f"InstructionSizes.nli_items={sizes.nli_items}: nli-follow has {len(nli.items)} premises")
    unknown = sorted(set(sizes.nli_wordings or ()) - set(nli.wordings))
    if unknown:
        raise ValueError(f"InstructionSizes.nli_wordings: unknown {unknown} (nli-follow has {list(nli.wordings)})")
    wordings = {name: pair for name, pair in nli.wordings.items()
                if sizes.nli_wordings is None or name in sizes.nli_wordings}
    items = random.Random(SEED).sample(nli.items, sizes.nli_items)
    unseen = [newsgroups_instructed(sizes.newsgroups_pool_per_label, sizes.newsgroups_test)
              if task == "twentynewsgroups" else licl_instructed(task, test=sizes.licl_test)
              for task in unseen_tasks()]
    return InstructionSubsets(InstructionFollowingData(items, wordings), unseen)


def score_instruction_suite(model: Embedder, sizes: InstructionSizes, batch_size: int = 32,
                            log: Callable[[str], None] = print) -> dict[str, Any]:
    """nli-follow (paired accuracy, each direction, per wording) and unseen-tasks (mean and per task), each under
    its own instructions as `evaluate` gives them: a model that cannot read them gets 50 on nli-follow."""
    data, scores, seconds = instruction_subsets(sizes), {}, {}
    start = time.perf_counter()
    scores["nli_follow"] = nli = evaluate_instruction_following(model, data.nli, batch_size=batch_size)
    seconds["nli_follow"] = round(time.perf_counter() - start, 1)
    log(f"  nli-follow: {nli['paired_accuracy']:.2f} (entailment {nli['entailment']:.2f}, contradiction "
        f"{nli['contradiction']:.2f}); hypotheses without the instruction "
        f"{nli['documents_without_instruction']['paired_accuracy']:.2f} ({seconds['nli_follow']:.0f} s)")
    start = time.perf_counter()
    scores["unseen_tasks"] = unseen = evaluate_unseen_tasks(model, data.unseen, batch_size=batch_size,
                                                            n_experiments=sizes.n_experiments,
                                                            samples_per_label=sizes.samples_per_label)
    seconds["unseen_tasks"] = round(time.perf_counter() - start, 1)
    log(f"  unseen tasks: {unseen['main_score']:.2f} ({seconds['unseen_tasks']:.0f} s)")
    return {**scores, "eval_s_per_task": seconds, "eval_s": sum(seconds.values())}
