"""Instruction following on NLI: the same premise must find a different hypothesis under a different instruction.

Each item is a premise with an entailed and a contradicted hypothesis. The premise (query side) and both hypotheses
(document side, which takes the prompt when the model puts it on both sides) are embedded under an "entailment"
instruction and again under a "contradiction" instruction. Under the first the entailed hypothesis must be the
nearer one, under the second the contradicted one. Paired accuracy is the mean of the two directions, so a model
that ignores its instruction ranks the pair the same way twice and scores exactly 50 (ties count half in each
direction); only a model the instruction steers can pass 50. Each wording (the training instructions, held-out
paraphrases) is scored on its own. Each is also scored with the hypotheses read as a fixed corpus, without the
instruction, as MTEB and FollowIR read retrieval's documents (`documents_without_instruction`): then only the
premise's embedding can follow, and a model that moves both sides together cannot pass 50 by that alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.task_sets import load_esnli_triplets
from ..models.embedder import Embedder
from .encoding import encode_texts, normalize_rows


@dataclass(frozen=True)
class FollowItem:
    """One premise with one entailed and one contradicted hypothesis."""

    premise: str
    entailed: str
    contradicted: str


@dataclass(frozen=True)
class InstructionFollowingData:
    """The items, and per wording its (entailment instruction, contradiction instruction)."""

    items: list[FollowItem]
    wordings: Mapping[str, tuple[str, str]]


def follow_items(split: str = "test") -> list[FollowItem]:
    """One item per e-SNLI premise that has both labels: its first entailed hypothesis and first contradiction."""
    items: dict[str, FollowItem] = {}
    for example in load_esnli_triplets((split,)):
        items.setdefault(example.query, FollowItem(example.query, example.positive, example.negatives[0]))
    return list(items.values())


def direction_scores(entail_sims: np.ndarray, contradict_sims: np.ndarray) -> dict[str, float]:
    """Scores x100 from the (n, 2) similarities [to entailed, to contradicted] under each instruction.

    A direction is right where its own hypothesis is nearer; a tie counts half, so a model whose two rows are
    identical gets exactly 50 paired accuracy.
    """
    entail = np.where(entail_sims[:, 0] > entail_sims[:, 1], 1.0,
                      np.where(entail_sims[:, 0] == entail_sims[:, 1], 0.5, 0.0))
    contradict = np.where(contradict_sims[:, 1] > contradict_sims[:, 0], 1.0,
                          np.where(contradict_sims[:, 1] == contradict_sims[:, 0], 0.5, 0.0))
    entailment, contradiction = 100 * float(entail.mean()), 100 * float(contradict.mean())
    return {"paired_accuracy": (entailment + contradiction) / 2, "entailment": entailment,
            "contradiction": contradiction}


def hypothesis_embeddings(model: Embedder, items: Sequence[FollowItem], instruction: str | None,
                          batch_size: int = 64, show_progress_bar: bool | None = None) -> np.ndarray:
    """Each item's [entailed, contradicted] hypotheses as documents, unit length, (n, 2, d)."""
    hypotheses = [h for i in items for h in (i.entailed, i.contradicted)]
    docs = normalize_rows(encode_texts(model, hypotheses, instruction, "document", batch_size, show_progress_bar))
    return docs.reshape(len(items), 2, -1)


def follow_embeddings(model: Embedder, items: Sequence[FollowItem], instruction: str, batch_size: int = 64,
                      show_progress_bar: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings under one instruction: the premises (n, d) as queries, and each item's [entailed,
    contradicted] hypotheses (n, 2, d) as documents."""
    premises = normalize_rows(encode_texts(model, [i.premise for i in items], instruction, "query", batch_size,
                                           show_progress_bar))
    return premises, hypothesis_embeddings(model, items, instruction, batch_size, show_progress_bar)


def evaluate_instruction_following(model: Embedder, data: InstructionFollowingData, instruction: str | None = None,
                                   batch_size: int = 64, show_progress_bar: bool | None = None) -> dict[str, Any]:
    """Paired accuracy and each direction per wording, under both readings of the hypotheses; the main score is
    the first wording's paired accuracy with the hypotheses read under the instruction. The premises are encoded
    once per instruction for both readings, and the plain hypotheses once for all wordings."""
    if instruction is not None:
        raise ValueError("nli-follow scores its own pairs of instructions (entailment, contradiction): it takes no "
                         "instruction override; leave it out of --instruction/--instructions")
    if not data.items or not data.wordings:
        raise ValueError("nli-follow needs at least one item and one wording")
    plain = hypothesis_embeddings(model, data.items, None, batch_size, show_progress_bar)
    per_wording: dict[str, dict[str, Any]] = {}
    for name, (entail_instruction, contradict_instruction) in data.wordings.items():
        instructed_sims, plain_sims = [], []
        for wording in (entail_instruction, contradict_instruction):
            premises, docs = follow_embeddings(model, data.items, wording, batch_size, show_progress_bar)
            instructed_sims.append(np.einsum("nd,nkd->nk", premises, docs))
            plain_sims.append(np.einsum("nd,nkd->nk", premises, plain))
        per_wording[name] = {**direction_scores(*instructed_sims),
                             "documents_without_instruction": direction_scores(*plain_sims),
                             "entailment_instruction": entail_instruction,
                             "contradiction_instruction": contradict_instruction}
    main = next(iter(per_wording.values()))
    return {"main_score": main["paired_accuracy"], **{k: main[k] for k in ("paired_accuracy", "entailment",
                                                                          "contradiction",
                                                                          "documents_without_instruction")},
            "wordings": per_wording, "num_items": len(data.items)}
