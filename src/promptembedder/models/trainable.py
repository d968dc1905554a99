"""What the training loop asks of a model, so that it never needs to know which model it trains.

As nanoGPT's `configure_optimizers`, the model says which parameters form which optimizer group; it also says
which texts take a prompt, which modules data parallelism wraps or shards, and how it embeds a contrastive
batch. PromptEmbedder and every baseline implement this; the trainer, the losses and GradCache use only it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .activation_checkpointing import enable_gradient_checkpointing
from .backbone import EmbeddingBackbone
from .embedder import Embedder

#: (texts, instruction) -> document embeddings without gradient, cached across epochs (see training.losses).
DocumentLookup = Callable[[list[str], str | None], torch.Tensor]


class TrainableEmbedder(Embedder):
    """An embedder with a frozen or adapted backbone E and `config.prompt_on`, trainable contrastively."""

    backbone: EmbeddingBackbone

    def uses_prompt(self, prompt_type: str) -> bool:
        """Queries always take the instruction (soft prompt or text); documents only with `prompt_on='both'`."""
        return prompt_type == "query" or self.config.prompt_on == "both"

    def param_groups(self, alignment_learning_rate: float) -> list[dict]:
        """The optimizer's parameter groups; one group at the run's learning rate unless a model says otherwise."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def instruction_report(self, instructions: list[str | None]) -> dict:
        """What the model makes of each training instruction, for train_summary.json; nothing without a P."""
        return {}

    def set_tau(self, tau: float) -> None:
        """The Gumbel-softmax temperature of this step; a model without a relaxation ignores it."""

    def gradient_checkpointing_enable(self) -> None:
        """Recompute E's activations in backward (transformers' name): memory for time."""
        enable_gradient_checkpointing(self.backbone.model)

    def set_read_once(self, enabled: bool) -> None:
        """Whether E may read each text once behind a suffix prompt (backbone.py, `TrainingConfig.read_once`); a model
        without a backbone E has nothing to switch."""
        backbone = getattr(self, "backbone", None)
        if backbone is not None:
            backbone.read_once = enabled

    def training_module(self) -> nn.Module:
        """The module a training step calls, which data parallelism wraps (its gradients are averaged over ranks)."""
        return self

    def sharded_modules(self) -> dict[str, nn.Module]:
        """The submodules FSDP shards, by attribute name (their gathered weights are saved under that prefix)."""
        raise ValueError(f"{type(self).__name__} cannot be sharded: fsdp shards PromptEmbedder's P and W only")

    def training_context(self, module: nn.Module, instruction: str | None, contrast: tuple[str | None, ...] = (),
                         documents: tuple[str | None, ...] = ()
                         ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """What the whole batch shares and gradients flow back into (PromptEmbedder's soft prompt), the same for its
        documents when they take the `documents` instruction instead of the batch's (retrieval's), and how alike
        the batch's is to the contexts of the `contrast` instructions (a regulariser keeps them apart); all None
        here: a model without a P reads the instruction itself."""
        if contrast:
            raise ValueError(f"{type(self).__name__} makes no prompt per instruction: prompt_diversity needs a P")
        return None, None, None

    def embed_in_context(self, module: nn.Module, texts: list[str], prompt_type: str, context: torch.Tensor | None,
                         instruction: str | None) -> torch.Tensor:
        """Embeddings with gradient, through `module` (the wrapped `training_module`) and the batch's context."""
        return module(texts, instruction, prompt_type)

    def embed_batch(self, module: nn.Module, queries: list[str], documents: list[str], instruction: str | None,
                    document_instruction: str | None, cached_documents: DocumentLookup,
                    contrast: tuple[str | None, ...] = ()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(query, document) embeddings of one batch, and the context's similarity to `contrast`'s (see
        `training_context`): documents from the cache when they need no gradient, and one forward for both
        sides when they are treated alike. Documents are read under `document_instruction`: the batch's, or None
        for retrieval's, as evaluation reads them (the default instruction's prompt under `prompt_on='both'`)."""
        own = document_instruction != instruction
        context, document_context, similarity = self.training_context(module, instruction, contrast,
                                                                      (document_instruction,) if own else ())
        if not self.document_side_trainable:
            docs = cached_documents(documents, document_instruction)
            return self.embed_in_context(module, queries, "query", context, instruction), docs, similarity
        if self.uses_prompt("document") and not own:
            everything = self.embed_in_context(module, queries + documents, "query", context, instruction)
            return everything[: len(queries)], everything[len(queries) :], similarity
        q = self.embed_in_context(module, queries, "query", context, instruction)
        return q, self.embed_documents(documents, document_context, document_instruction), similarity

    def embed_documents(self, documents: list[str], context: torch.Tensor | None,
                        document_instruction: str | None) -> torch.Tensor:
        """Documents with gradient, under their own instruction and the context `training_context` made for them,
        outside the wrapped module (data parallelism allows one forward of it per backward)."""
        return self.embed(documents, document_instruction, "document")
