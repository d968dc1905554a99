"""The Prompting LLM P: turns an instruction into K soft tokens, differentiably.

Each step relaxes P's next-token distribution with Gumbel-softmax, forms the soft token as that
distribution times P's token-embedding matrix, and feeds it back through P's KV cache, so K tokens
cost K small forwards and gradients reach P's weights through the whole generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SoftPrompt:
    """K soft tokens in P's embedding space (K, d_P) and the token ids they are closest to (argmax)."""

    embeddings: torch.Tensor
    token_ids: list[int]


def relax(logits: torch.Tensor, tau: float, hard: bool, stochastic: bool) -> torch.Tensor:
    """Gumbel-softmax in training; the noiseless softmax (or one-hot argmax) for deterministic inference."""
    if stochastic:
        return F.gumbel_softmax(logits, tau=tau, hard=hard, dim=-1)
    if hard:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    return F.softmax(logits / tau, dim=-1)


def _cache_of(output) -> dict:
    """The KV cache as the next forward's keyword: `cache` in recent transformers, `past_key_values` before."""
    if "cache" in output:
        return {"cache": output["cache"]}
    return {"past_key_values": output["past_key_values"]}


class PromptGenerator(nn.Module):
    """Wraps any Hugging Face causal LM and its tokenizer as the soft-prompt generator."""

    def __init__(self, model: nn.Module, tokenizer, num_soft_tokens: int, tau: float = 1.0, hard: bool = False):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.num_soft_tokens = num_soft_tokens
        self.tau = tau
        self.hard = hard

    @property
    def embedding_matrix(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight

    @property
    def hidden_size(self) -> int:
        return self.embedding_matrix.shape[1]

    @property
    def embed_scale(self) -> float | torch.Tensor:
        """Some models (Gemma) scale token embeddings inside the embedding layer; inputs_embeds skip it."""
        return getattr(self.model.get_input_embeddings(), "embed_scale", 1.0)

    @property
    def context_length(self) -> int | None:
        config = getattr(self.model.config, "get_text_config", lambda: self.model.config)()
        return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)

    def instruction_ids(self, instruction: str) -> torch.Tensor:
        """Token ids of the instruction; an empty instruction still starts from BOS (or EOS) so P has input."""
        ids = self.tokenizer(instruction, add_special_tokens=True)["input_ids"]
        if not ids or (self.tokenizer.bos_token_id is not None and ids[0] != self.tokenizer.bos_token_id):
            start = self.tokenizer.bos_token_id
            if start is None:
                start = self.tokenizer.eos_token_id
            if start is not None:
                ids = [start, *ids]
        if not ids:
            raise ValueError("the prompting model's tokenizer has no BOS/EOS token for an empty instruction")
        limit = self.context_length
        if limit is not None and len(ids) + self.num_soft_tokens > limit:
            raise ValueError(
                f"instruction is {len(ids)} tokens; with {self.num_soft_tokens} soft tokens it exceeds "
                f"the prompting model's context of {limit} tokens: shorten the instruction"
            )
        return torch.tensor([ids], device=self.embedding_matrix.device)

    def forward(self, instruction: str) -> SoftPrompt:
        """Generate K soft tokens for one instruction (stochastic while training, deterministic in eval)."""
        ids = self.instruction_ids(instruction)
        weight = self.embedding_matrix
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        soft_tokens, token_ids = [], []
        for step in range(self.num_soft_tokens):
            logits = out.logits[:, -1].float()
            probs = relax(logits, self.tau, self.hard, stochastic=self.training)
            soft = probs.to(weight.dtype) @ weight
            soft_tokens.append(soft)
            token_ids.append(int(probs.argmax(-1)))
            if step + 1 < self.num_soft_tokens:
                step_input = (soft * self.embed_scale).to(weight.dtype).unsqueeze(1)
                out = self.model(inputs_embeds=step_input, use_cache=True, logits_to_keep=1, **_cache_of(out))
        return SoftPrompt(torch.cat(soft_tokens, 0), token_ids)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids)
