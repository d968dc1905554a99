"""Named training sources with per-task instructions, and how several are mixed.

Each source gives `TrainExample`s carrying its task's instruction, or its task's wordings from the instruction
catalogue (the many-task sources of `task_sources`), so `make_batches` keeps one instruction (one soft prompt) per
batch. Sources are mixed by size, or resampled to `task_weights`. A source built from a task's
training split makes that task in-domain (see `evaluation.TaskSpec.train_source`). SciFact's hard negatives are
mined with a model the caller passes (`negatives_model`): data loads no model itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import numpy as np

from ..hub.registry import cache_dir, resolve
from . import task_sources as many
from .datasets import NLI_INSTRUCTION, STS_INSTRUCTION, TrainExample, load_snli_triplets, load_sts, load_sts_train_pairs
from .files import load_examples
from .instructions import SUITE_PROMPTS, training_instructions
from .negatives import TextEncoder, mine_negatives
from .task_sets import load_banking77, load_esnli_triplets, load_mrpc, load_scifact

__all__ = ["ALL_SOURCES", "MULTITASK_CAP", "SOURCES", "load_training_data", "mine_negatives", "mix_sources"]

#: What `--train-data all` means.
ALL_SOURCES = ("esnli", "sts-train", "scifact-train", "banking77-train", "mrpc-train")
SEED = 0
#: `multitask` keeps at most this many examples of each task (a seeded sample), so SST-2's 67k or the NLI pool do
#: not drown the small licl tasks (163-1,400 each).
MULTITASK_CAP = 1000


def _esnli(embedding_model: str) -> list[TrainExample]:
    return load_esnli_triplets(instruction=NLI_INSTRUCTION)


def _banking77(embedding_model: str) -> list[TrainExample]:
    """Each query, another query of the same intent (positive) and one of a different intent (negative)."""
    data = load_banking77("train")
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(data.labels):
        by_label.setdefault(label, []).append(i)
    rng = random.Random(SEED)
    examples = []
    for text, label in zip(data.texts, data.labels, strict=True):
        same = [j for j in by_label[label] if data.texts[j] != text]
        if not same:
            continue
        other = rng.choice([lab for lab in by_label if lab != label])
        examples.append(TrainExample(text, data.texts[rng.choice(same)], (data.texts[rng.choice(by_label[other])],),
                                     SUITE_PROMPTS["banking77"].instruction))
    return examples


def _mrpc(embedding_model: str) -> list[TrainExample]:
    """MRPC training paraphrases, minus the 127 pairs that are also STS Benchmark test pairs."""
    sts_test = {frozenset((p.sentence1, p.sentence2)) for p in load_sts("test")}
    return [TrainExample(p.sentence1, p.sentence2, (), SUITE_PROMPTS["mrpc"].instruction) for p in load_mrpc("train")
            if p.label == 1 and frozenset((p.sentence1, p.sentence2)) not in sts_test]


def _scifact(embedding_model: str, negatives_model: Callable[[], TextEncoder] | None = None) -> list[TrainExample]:
    """(claim, a cited abstract, the top-ranked uncited abstract by the frozen E); negatives cached per E, mined
    with `negatives_model()` (E, loaded only when its negatives are not cached yet)."""
    data = load_scifact("train")
    key = hashlib.sha256(json.dumps([resolve(embedding_model), sorted(data.qrels)]).encode()).hexdigest()[:16]
    path = cache_dir() / "mined" / f"scifact-train-{key}.json"
    if path.is_file():
        negatives = json.loads(path.read_text(encoding="utf-8"))
    elif negatives_model is None:
        raise ValueError(f"scifact-train: no hard negatives of {embedding_model} are cached ({path}), and mining them "
                         "needs the model: give load_training_data a negatives_model (training does)")
    else:
        print(f"scifact-train: mining hard negatives with {embedding_model} over {len(data.corpus):,} abstracts "
              f"(once per E; cached in {path.parent})", file=sys.stderr, flush=True)
        negatives = mine_negatives(negatives_model(), data)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(negatives), encoding="utf-8")
        tmp.replace(path)
    prompt = SUITE_PROMPTS["scifact"]
    return [TrainExample(data.queries[q], data.corpus[d], (data.corpus[negatives[q]],), prompt.instruction,
                         document_prompt_type=prompt.document_prompt_type)
            for q, docs in data.qrels.items() for d in docs if q in negatives]


def with_wordings(examples: list[TrainExample], task: str) -> list[TrainExample]:
    """`examples` with `task`'s training wordings from the catalogue (drawn per batch), its own first."""
    wordings = training_instructions(task)
    return [dataclasses.replace(e, instruction=wordings[0], instructions=wordings) for e in examples]


def _multitask(embedding_model: str, labels_as_documents: bool = False) -> list[TrainExample]:
    """The many-task mix: instruction-contrastive NLI (e-SNLI dev, MultiNLI dev, CAD train/dev), Quora, SciTail,
    TREC, SST-2, every training licl task (as same-label pairs, or with `labels_as_documents` its label names as
    documents), and the six-task suite's training sets (STS-B train, Banking77, MRPC minus STS-B test pairs,
    SciFact training claims without mined negatives), each task capped at MULTITASK_CAP.

    Never read: the unseen and excluded tasks of the catalogue (licl ag_news, trec, sst2, sst5, rotten_tomatoes,
    scierc, semeval_absa_laptop, the ten unseen ones, 20 Newsgroups), e-SNLI test and its premises, AG News (its only
    split is the evaluation's).
    """
    scifact = load_scifact("train")
    parts = [many.esnli_contrastive(), many.mnli_contrastive(), many.cad_contrastive(), many.quora_pairs(),
             many.scitail_triplets(), many.trec_pairs(), many.sst2_pairs(),
             many.licl_pairs(labels_as_documents=labels_as_documents),
             with_wordings(load_sts_train_pairs(), "sts"), with_wordings(_banking77(embedding_model), "banking77"),
             with_wordings(_mrpc(embedding_model), "mrpc"),
             with_wordings([TrainExample(scifact.queries[q], scifact.corpus[d],
                                         document_prompt_type=SUITE_PROMPTS["scifact"].document_prompt_type)
                            for q, docs in scifact.qrels.items() for d in docs], "scifact")]
    by_task: dict[tuple[str, ...], list[TrainExample]] = {}
    for example in (e for part in parts for e in part):
        by_task.setdefault(example.instructions, []).append(example)
    rng = random.Random(SEED)
    mixed = []
    for examples in by_task.values():
        keep = sorted(rng.sample(range(len(examples)), MULTITASK_CAP)) if len(examples) > MULTITASK_CAP else None
        mixed += examples if keep is None else [examples[i] for i in keep]
    return mixed


#: Named sources: name -> builder(embedding_model) -> examples (`load_training_data` gives scifact-train its
#: `negatives_model` too).
SOURCES: dict[str, Callable[[str], list[TrainExample]]] = {
    "snli": lambda e: load_snli_triplets(instruction=NLI_INSTRUCTION),
    "esnli": _esnli,
    "sts-train": lambda e: load_sts_train_pairs(instruction=STS_INSTRUCTION),
    "scifact-train": _scifact,
    "banking77-train": _banking77,
    "mrpc-train": _mrpc,
    "esnli-contrastive": lambda e: many.esnli_contrastive(),
    "mnli": lambda e: many.mnli_contrastive(),
    "cad-nli": lambda e: many.cad_contrastive(),
    "nli-contrastive": lambda e: [*many.esnli_contrastive(), *many.mnli_contrastive(), *many.cad_contrastive()],
    "quora": lambda e: many.quora_pairs(),
    "scitail": lambda e: many.scitail_triplets(),
    "trec-train": lambda e: many.trec_pairs(),
    "sst2-train": lambda e: many.sst2_pairs(),
    "agnews": lambda e: many.agnews_pairs(),
    "licl": lambda e: many.licl_pairs(),
    "licl-labels": lambda e: many.licl_pairs(labels_as_documents=True),
    "multitask": _multitask,
    "multitask-labels": lambda e: _multitask(e, labels_as_documents=True),
}


def mix_sources(per_source: Mapping[str, list[TrainExample]], task_weights: Mapping[str, float] | None = None,
                seed: int = SEED) -> list[TrainExample]:
    """All examples (mixing by size), or each source resampled to its share `w / sum(w)` of the same total."""
    if not task_weights:
        return [example for examples in per_source.values() for example in examples]
    unknown = sorted(set(task_weights) - set(per_source))
    if unknown:
        raise ValueError(f"task_weights names {unknown}, which are not among the training sources "
                         f"{list(per_source)}")
    weights = {name: float(task_weights.get(name, 1.0)) for name in per_source}
    if any(w < 0 for w in weights.values()) or not sum(weights.values()):
        raise ValueError(f"task_weights must be >= 0 with a positive sum, got {dict(task_weights)}")
    total = sum(len(v) for v in per_source.values())
    rng = np.random.RandomState(seed)
    mixed = []
    for name, examples in per_source.items():
        n = round(total * weights[name] / sum(weights.values()))
        if n and examples:
            picks = rng.choice(len(examples), size=n, replace=n > len(examples))
            mixed += [examples[i] for i in picks]
    return mixed


def parse_task_weights(value: str | Mapping[str, float] | None) -> dict[str, float] | None:
    """`"esnli=1,scifact-train=2"` (the command line's form) or a mapping, into `{source: weight}`."""
    if value is None or isinstance(value, Mapping):
        return None if value is None else {str(k): float(v) for k, v in value.items()}
    weights = {}
    for item in filter(None, (part.strip() for part in str(value).split(","))):
        name, sep, number = item.partition("=")
        try:
            weights[name.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"task_weights: {item!r} is not NAME=WEIGHT (e.g. esnli=1,scifact-train=2)")
    return weights


def load_training_data(specs: list, skip_invalid: bool = False, embedding_model: str = "minilm-l6",
                       task_weights: Mapping[str, float] | None = None,
                       negatives_model: Callable[[], TextEncoder] | None = None) -> list[TrainExample]:
    """Named sources (see `SOURCES`; `all` = `ALL_SOURCES`) or files ({'path': ..., 'instruction': ..., columns}).

    `negatives_model` returns `embedding_model` loaded (anything with its `encode`); scifact-train calls it only to
    mine hard negatives that are not cached yet."""
    builders = {**SOURCES, "scifact-train": partial(_scifact, negatives_model=negatives_model)}
    per_source: dict[str, list[TrainExample]] = {}
    for spec in specs:
        names = ALL_SOURCES if spec == "all" else (spec,)
        for name in names:
            if isinstance(name, str) and name in builders:
                per_source[name] = builders[name](embedding_model)
                continue
            options = {"path": name} if isinstance(name, str) else dict(name)
            path = options.pop("path")
            if isinstance(name, str) and not Path(path).suffix:
                raise ValueError(f"unknown training source {name!r}: a file path, 'all' or one of {list(SOURCES)}")
            per_source[str(path)] = load_examples(path, skip_invalid=skip_invalid, **options)
    examples = mix_sources(per_source, task_weights)
    if not examples:
        raise ValueError("no training examples: give train_data")
    return examples
