"""Training examples from the many-task sets, each carrying its task's wordings from the instruction catalogue
(`instructions.json`), so a batch of the task draws one of them.

- Classification (licl tasks, TREC, SST-2, AG News) becomes contrastive pairs as `banking77-train` does: a text,
  another text of the same label (positive) and a text of another label (hard negative). `licl-labels` is the
  other form: a text with its label's name as the document and another label's name as hard negative.
- NLI becomes instruction-contrastive data: a premise with an entailed hypothesis as positive under the
  `nli-entailment` wordings and with a contradicted one under the `nli-contradiction` wordings, the other view being
  the hard negative: the same query needs a different document under a different instruction, which no single
  static prompt can fit. No NLI source reads e-SNLI test (kept for the `nli-follow` evaluation), and premises that
  occur in it are dropped.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from .datasets import PathLike, TrainExample
from .instructions import catalogue, training_instructions
from .licl import load_licl
from .pair_sets import load_cad_nli, load_mnli, load_quora, load_scitail
from .task_sets import NLIPair, load_agnews, load_esnli_pairs, load_sst2, load_trec

__all__ = ["classification_pairs", "label_documents", "licl_training_tasks", "nli_contrastive", "quora_pairs",
           "scitail_triplets"]

SEED = 0


def classification_pairs(texts: Sequence[str], labels: Sequence[str], task: str,
                         seed: int = SEED) -> list[TrainExample]:
    """Per text: another text of its label (positive), one of a random other label (hard negative).

    Labels whose texts are all the same give nothing. Draws are by rejection, so a 67k-text set takes a second.
    """
    wordings = training_instructions(task)
    by_label: dict[str, list[str]] = {}
    for text, label in zip(texts, labels, strict=True):
        by_label.setdefault(label, []).append(text)
    usable = {label for label, group in by_label.items() if len(set(group)) > 1}
    rng = random.Random(seed)
    examples = []
    for text, label in zip(texts, labels, strict=True):
        others = [lab for lab in by_label if lab != label]
        if label not in usable or not others:
            continue
        positive = rng.choice(by_label[label])
        while positive == text:
            positive = rng.choice(by_label[label])
        negative = rng.choice(by_label[rng.choice(others)])
        examples.append(TrainExample(text, positive, (negative,), instructions=wordings))
    return examples


def label_documents(texts: Sequence[str], labels: Sequence[str], task: str, seed: int = SEED) -> list[TrainExample]:
    """Per text: its label's name as the document, a random other label's name as hard negative."""
    wordings = training_instructions(task)
    names = list(dict.fromkeys(labels))
    rng = random.Random(seed)
    return [TrainExample(text, label, (rng.choice([n for n in names if n != label]),), instructions=wordings)
            for text, label in zip(texts, labels, strict=True) if len(names) > 1]


def nli_contrastive(pairs: Iterable[NLIPair], exclude: frozenset[str] = frozenset()) -> list[TrainExample]:
    """Each premise with both an entailed and a contradicted hypothesis gives, per entailed one, an
    `nli-entailment` example (contradiction as hard negative) and, per contradicted one, an `nli-contradiction`
    example (entailment as hard negative); the other view is paired round-robin. `exclude`: premises to drop."""
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for pair in pairs:
        if pair.label != "neutral" and pair.premise not in exclude:
            entailed, contradicted = groups.setdefault(pair.premise, ([], []))
            (entailed if pair.label == "entailment" else contradicted).append(pair.hypothesis)
    entail, contradict = training_instructions("nli-entailment"), training_instructions("nli-contradiction")
    examples = []
    for premise, (entailed, contradicted) in groups.items():
        if not entailed or not contradicted:
            continue
        examples += [TrainExample(premise, h, (contradicted[i % len(contradicted)],), instructions=entail)
                     for i, h in enumerate(entailed)]
        examples += [TrainExample(premise, h, (entailed[i % len(entailed)],), instructions=contradict)
                     for i, h in enumerate(contradicted)]
    return examples


def esnli_test_premises(root: PathLike | None = None) -> frozenset[str]:
    """The premises the `nli-follow` evaluation reads: no training source may use them."""
    return frozenset(pair.premise for pair in load_esnli_pairs("test", root))


def esnli_contrastive(root: PathLike | None = None) -> list[TrainExample]:
    return nli_contrastive(load_esnli_pairs("dev", root), esnli_test_premises(root))


def mnli_contrastive(root: PathLike | None = None) -> list[TrainExample]:
    return nli_contrastive(load_mnli("dev_matched", root), esnli_test_premises(root))


def cad_contrastive(root: PathLike | None = None) -> list[TrainExample]:
    """CAD train and dev (its test split is built on SNLI test premises, so it is never read)."""
    pairs = [*load_cad_nli("train", root), *load_cad_nli("dev", root)]
    return nli_contrastive(pairs, esnli_test_premises(root))


def quora_pairs(root: PathLike | None = None) -> list[TrainExample]:
    """The duplicate question pairs of Quora dev and test (10,000), in-batch negatives only."""
    wordings = training_instructions("quora")
    return [TrainExample(p.sentence1, p.sentence2, (), instructions=wordings)
            for split in ("dev", "test") for p in load_quora(split, root) if p.label == 1]


def scitail_triplets(root: PathLike | None = None) -> list[TrainExample]:
    """Per SciTail hypothesis (the query), each premise that entails it, with a neutral premise retrieved for the
    same hypothesis as hard negative when there is one (a lexically close near miss)."""
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for split in ("dev", "test"):
        for pair in load_scitail(split, root):
            entails, neutral = groups.setdefault(pair.hypothesis, ([], []))
            (entails if pair.label == "entailment" else neutral).append(pair.premise)
    wordings = training_instructions("scitail")
    return [TrainExample(hypothesis, premise, (neutral[i % len(neutral)],) if neutral else (), instructions=wordings)
            for hypothesis, (entails, neutral) in groups.items() for i, premise in enumerate(entails)]


def trec_pairs(root: PathLike | None = None) -> list[TrainExample]:
    data = load_trec("train", root)
    return classification_pairs(data.texts, data.labels, "trec")


def sst2_pairs(root: PathLike | None = None) -> list[TrainExample]:
    data = load_sst2("train", root)
    return classification_pairs(data.texts, data.labels, "sst2")


def agnews_pairs(root: PathLike | None = None) -> list[TrainExample]:
    """AG News has only its test split here: training on it makes any AG News score in-domain."""
    data = load_agnews("test", root)
    return classification_pairs(data.texts, data.labels, "agnews")


def licl_training_tasks() -> list[str]:
    """The licl tasks with training wordings in the catalogue (never the unseen or excluded ones), by name."""
    return sorted(task.removeprefix("licl/") for task in catalogue().train if task.startswith("licl/"))


def licl_pairs(root: PathLike | None = None, labels_as_documents: bool = False) -> list[TrainExample]:
    """Every training licl task's five training draws (duplicates once) as classification pairs, or with the label
    names (the config's `options`) as documents."""
    build = label_documents if labels_as_documents else classification_pairs
    examples = []
    for name in licl_training_tasks():
        data = load_licl(name, "train", root)
        examples += build(data.texts, data.labels, f"licl/{name}")
    return examples
