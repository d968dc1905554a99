"""P and W as one module: the part of PromptEmbedder that trains, and what data parallelism wraps."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .alignment import Alignment
from .deep_prompt import DeepPrompt
from .generator import PromptGenerator


class PromptHead(nn.Module):
    """P and W as one module, instruction -> aligned soft prompt: what data-parallel training wraps, so frozen E
    is never broadcast or synchronised. It shares its weights with the PromptEmbedder it comes from; `text` is that
    model's `config.instruction_text` (what P reads for an instruction)."""

    def __init__(self, generator: PromptGenerator, alignment: Alignment, text: Callable[[str | None], str]):
        super().__init__()
        self.generator, self.alignment, self._text = generator, alignment, text

    def forward(self, instruction: str | None, contrast: tuple[str | None, ...] = (),
                documents: tuple[str | None, ...] = ()
                ) -> tuple[torch.Tensor | DeepPrompt, torch.Tensor | DeepPrompt | None, torch.Tensor | None]:
        """The aligned prompt for `instruction`; with `documents` (the documents' own instruction) theirs too; with
        `contrast`, the mean cosine of P's soft tokens for `instruction` against those for each contrast
        instruction (the prompt-diversity term). One generation for all of them."""
        if not contrast and not documents:
            return self.alignment(self.generator(self._text(instruction)).embeddings), None, None
        texts = [self._text(i) for i in (instruction, *documents, *contrast)]
        tokens = [p.embeddings for p in self.generator.generate(texts)]
        document_prompt = self.alignment(tokens[1]) if documents else None
        similarity = None
        if contrast:
            unit = unit_prompts([tokens[0], *tokens[1 + len(documents) :]])
            similarity = (unit[1:] @ unit[0]).mean()
        return self.alignment(tokens[0]), document_prompt, similarity


def unit_prompts(prompts: list[torch.Tensor]) -> torch.Tensor:
    """Each (K, d) prompt flattened to a unit vector, one row each: their dot products are how alike they are."""
    return torch.nn.functional.normalize(torch.stack([p.flatten().float() for p in prompts]), dim=1)
