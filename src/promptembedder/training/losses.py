"""The contrastive loss of a training batch, as sentence-transformers' losses: the loss embeds the batch through
the model's training interface, so the trainer only calls it and back-propagates."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.datasets import TrainExample
from ..models.trainable import TrainableEmbedder
from .distributed import world_size
from .infonce import Gather, info_nce


class DocumentCache:
    """Document embeddings without gradient (their side is frozen, e.g. `prompt_on='query'`), cached across epochs."""

    def __init__(self, model: TrainableEmbedder):
        self.model = model
        self.vectors: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str], instruction: str | None) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            with torch.no_grad():
                vectors = self.model.embed(missing, instruction, "document", normalize=True)
            self.vectors.update(zip(missing, vectors.detach(), strict=True))
        return torch.stack([self.vectors[t] for t in texts])


def gradient_sync(module: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """Whether a backward averages gradients over ranks: DDP skips it inside `no_sync`, to accumulate locally
    first; FSDP and a single process have no such switch here."""
    no_sync = getattr(module, "no_sync", None)
    return contextlib.nullcontext() if enabled or no_sync is None else no_sync()


def split_batch(batch: list[TrainExample]) -> tuple[str | None, str | None, list[str], list[str]]:
    """(instruction, the documents' instruction, queries, documents): the positives first, then every hard
    negative. The documents' instruction is the batch's, or None for documents read as evaluation reads
    retrieval's (`TrainExample.document_prompt_type`)."""
    documents = [e.positive for e in batch] + [n for e in batch for n in e.negatives]
    instruction = batch[0].instruction
    return (instruction, instruction if batch[0].document_prompt_type == "query" else None,
            [e.query for e in batch], documents)


#: The most other instructions whose prompts a step's prompt is kept apart from (`prompt_diversity`), drawn anew
#: each step: each adds a row to P's batched generation.
DIVERSITY_CONTRAST = 3


@dataclass(eq=False)
class ContrastiveLoss:
    """InfoNCE of one batch (its instruction shared), embedded by `model` through `module` (its wrapped
    `training_module`); under data parallelism the loss is global when `gather` concatenates over ranks.

    With `prompt_diversity` > 0, the loss adds that weight times the mean cosine of P's soft tokens for the batch's
    instruction against those for up to DIVERSITY_CONTRAST other training `instructions`: a term against P writing
    one prompt for every instruction (experiments/regime/LOG.md)."""

    model: TrainableEmbedder
    module: nn.Module
    documents: DocumentCache
    temperature: float = 0.05
    symmetric: bool = False
    gather: Gather | None = None
    autocast: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    prompt_diversity: float = 0.0
    instructions: tuple[str | None, ...] = ()

    def __call__(self, batch: list[TrainExample]) -> torch.Tensor:
        instruction, document_instruction, queries, documents = split_batch(batch)
        with self.autocast_context():
            q, docs, similarity = self.model.embed_batch(self.module, queries, documents, instruction,
                                                         document_instruction, self.documents,
                                                         self.contrast(instruction))
        return self.info_nce(q, docs, len(batch)) + self.diversity_term(similarity)

    def contrast(self, instruction: str | None) -> tuple[str | None, ...]:
        """The other instructions this step's prompt is kept apart from (a seeded draw: resuming repeats it)."""
        if not self.prompt_diversity:
            return ()
        others = [i for i in self.instructions if i != instruction]
        picks = torch.randperm(len(others))[:DIVERSITY_CONTRAST].tolist()
        return tuple(others[i] for i in sorted(picks))

    def diversity_term(self, similarity: torch.Tensor | None) -> torch.Tensor | float:
        if similarity is None:
            return 0.0
        term = self.prompt_diversity * similarity
        if self.gather is None:
            return term
        # Every rank computes this same term, and the step scales a gathered loss by the world size before DDP
        # averages (see Trainer._update): each rank back-propagates its 1/world share, at the term's full value.
        share = term / world_size()
        return share + (term - share).detach()

    def info_nce(self, q: torch.Tensor, docs: torch.Tensor, num_positives: int) -> torch.Tensor:
        # With a gather every rank must take part, even one whose slice of the batch has no hard negatives.
        has_negatives = docs.shape[0] > num_positives or self.gather is not None
        negatives = docs[num_positives:].float() if has_negatives else None
        return info_nce(q.float(), docs[:num_positives].float(), negatives, self.temperature, self.symmetric,
                        self.gather)

    def autocast_context(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast)
