"""GradCache (Gao et al. 2021) as a loss, as sentence-transformers' CachedMultipleNegativesRankingLoss: the loss
of the whole batch with the memory of one chunk; the trainer calls and back-propagates it like any loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.datasets import TrainExample
from .losses import ContrastiveLoss, gradient_sync, split_batch
from .rng import rng_state, set_rng_state


@dataclass(eq=False)
class CachedContrastiveLoss(ContrastiveLoss):
    """Pass 1 (here) embeds chunk by chunk without a graph and computes the loss on those embeddings. Its
    backward (a hook on the returned loss) caches the loss's gradient w.r.t. each embedding, re-embeds each chunk
    with a graph (same RNG, so dropout repeats) and back-propagates the cached gradient. The model's training
    context (PromptEmbedder's soft prompt) is made once: a leaf the chunks share, its gradient sent back at the end.

    Under DDP, a baseline's chunks accumulate gradients locally (`no_sync`) and the last chunk's backward
    averages them over ranks, as in the GradCache library; PromptEmbedder's chunks only touch frozen E, so the
    final backward through P and W is the one DDP or FSDP synchronises.
    """

    chunk_size: int = 1

    def __call__(self, batch: list[TrainExample]) -> torch.Tensor:
        model, size = self.model, self.chunk_size
        instruction, document_instruction, queries, documents = split_batch(batch)
        with self.autocast_context():
            # Documents under their own instruction (retrieval's) share a context of their own, made once too.
            own = document_instruction != instruction
            context, document_context, similarity = model.training_context(
                self.module, instruction, self.contrast(instruction), (document_instruction,) if own else ())
        penalty = self.diversity_term(similarity)
        leaf = context.detach().requires_grad_() if context is not None else None
        document_leaf = document_context.detach().requires_grad_() if document_context is not None else None

        def embed(texts: list[str], prompt_type: str) -> torch.Tensor:
            with self.autocast_context():
                if prompt_type == "document" and own:
                    return model.embed_documents(texts, document_leaf, document_instruction)
                return model.embed_in_context(self.module, texts, prompt_type, leaf, instruction)

        pieces = [(queries[i : i + size], "query") for i in range(0, len(queries), size)]
        cached_docs = not model.document_side_trainable
        if not cached_docs:
            document_pieces = [(documents[i : i + size], "document") for i in range(0, len(documents), size)]
            # The last backward is the one that averages over ranks, so it must run through `module`: documents
            # read outside it (under their own instruction) go first.
            pieces = document_pieces + pieces if own else pieces + document_pieces
        states, reps = [], []
        with torch.no_grad():
            for texts, prompt_type in pieces:
                states.append(rng_state())
                reps.append(embed(texts, prompt_type).detach().requires_grad_())
        q = torch.cat([r for r, (_, kind) in zip(reps, pieces, strict=True) if kind == "query"])
        docs = (self.documents(documents, document_instruction) if cached_docs else
                torch.cat([r for r, (_, kind) in zip(reps, pieces, strict=True) if kind == "document"]))
        loss = self.info_nce(q, docs, len(batch))

        @torch.enable_grad()  # autograd runs hooks with gradients off; pass 2 builds graphs
        def backward(grad: torch.Tensor) -> None:
            loss.backward(grad)
            for i, ((texts, prompt_type), state, rep) in enumerate(zip(pieces, states, reps, strict=True)):
                with gradient_sync(self.module, i == len(pieces) - 1), \
                        torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                    set_rng_state(state)
                    embed(texts, prompt_type).backward(rep.grad)
            # P's graph is walked once, for the prompt's gradient and the diversity term's together.
            ends = [(c, g.grad) for c, g in ((context, leaf), (document_context, document_leaf))
                    if c is not None and g.grad is not None]
            ends += [(penalty, grad)] if torch.is_tensor(penalty) else []
            if ends:
                torch.autograd.backward(*zip(*ends, strict=True))

        result = (loss + penalty).detach().requires_grad_()
        result.register_hook(backward)
        return result
