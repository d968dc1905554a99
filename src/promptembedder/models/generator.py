"""The Prompting LLM P: turns an instruction into K soft tokens, differentiably.

Each step relaxes P's next-token distribution with Gumbel-softmax (the plain softmax at inference, and in
training too with `gumbel_noise=False`), forms the soft token as that distribution times P's token-embedding
matrix, and feeds it back through P's KV cache, so K tokens cost K small forwards and gradients reach P's weights
through the whole generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .kv_cache import cache_of


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


class PromptGenerator(nn.Module):
    """Wraps any Hugging Face causal LM and its tokenizer as the soft-prompt generator."""

    #: Entry points besides `forward` that FSDP must gather the sharded weights for (distributed.py).
    fsdp_forward_methods = ("generate",)

    def __init__(self, model: nn.Module, tokenizer, num_soft_tokens: int, tau: float = 1.0, hard: bool = False,
                 gumbel_noise: bool = True):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.num_soft_tokens = num_soft_tokens
        self.tau = tau
        self.hard = hard
        self.gumbel_noise = gumbel_noise  # False: training relaxes as inference does, without Gumbel draws
        self._cast: tuple[tuple, torch.Tensor] | None = None
        head = model.get_output_embeddings()
        if isinstance(head, nn.Linear) and head.bias is None and head.weight is self.embedding_matrix:
            # A tied head multiplies by the same frozen matrix as the soft-token mixture: both use one cast.
            head.forward = lambda hidden: F.linear(hidden, self.low_precision(head.weight))

    @property
    def embedding_matrix(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight

    def low_precision(self, weight: torch.Tensor) -> torch.Tensor:
        """A frozen weight in the autocast dtype, cast once and kept while its values stay the same.

        Under autocast every use of a frozen fp32 matrix is cast again (autocast caches only trainable leaves), and
        each cast is saved for backward: with Qwen2.5's 151k x 896 token embeddings that is 272 MB per generation
        step for the tied head and as much for the soft-token mixture. The values are those autocast would
        produce, so results do not change; without autocast (or a trainable or FSDP-sharded weight) the weight
        itself is returned.
        """
        device = weight.device.type
        if weight.requires_grad or not torch.is_autocast_enabled(device) or type(self).__name__.startswith("FSDP"):
            return weight
        dtype = torch.get_autocast_dtype(device)
        key = (weight.data_ptr(), weight._version, dtype)
        if self._cast is None or self._cast[0] != key:
            self._cast = (key, weight.detach().to(dtype))
        return self._cast[1]

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
        embeddings, token_ids = self._generate(self.instruction_ids(instruction))
        return SoftPrompt(embeddings[0], token_ids[0])

    def generate(self, instructions: list[str]) -> list[SoftPrompt]:
        """K soft tokens for each instruction, generated side by side: the instructions left-padded into one batch,
        so each of the K steps is one forward for all of them (what the prompt-diversity term asks for every step).
        In eval mode the prompts are those of one-at-a-time `forward`, up to rounding."""
        rows = [self.instruction_ids(text)[0] for text in instructions]
        length = max(len(r) for r in rows)
        device = self.embedding_matrix.device
        pad = torch.zeros(length, dtype=torch.long, device=device)  # any id: the mask hides it
        ids = torch.stack([torch.cat([pad[: length - len(r)], r]) for r in rows])
        mask = torch.stack([torch.arange(length, device=device) >= length - len(r) for r in rows]).long()
        embeddings, token_ids = self._generate(ids, mask)
        return [SoftPrompt(embeddings[i], token_ids[i]) for i in range(len(rows))]

    def _generate(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list[list[int]]]:
        """The K-step loop over a batch of instruction ids: soft tokens (B, K, d_P) and their argmax ids. With a
        left-padding `mask`, each row's positions start at its first real token; without one (a single unpadded
        instruction) the model gets neither, as it always did."""
        weight = self.embedding_matrix
        mixture = self.low_precision(weight)
        padding = {} if mask is None else {"attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **padding)
        soft_tokens, token_ids = [], []
        for step in range(self.num_soft_tokens):
            probs = relax(out.logits[:, -1].float(), self.tau, self.hard,
                          stochastic=self.training and self.gumbel_noise)
            soft = probs.to(mixture.dtype) @ mixture  # (B, d_P)
            soft_tokens.append(soft)
            token_ids.append(probs.argmax(-1))  # read once at the end: no device sync inside the loop
            if step + 1 < self.num_soft_tokens:
                if mask is not None:
                    mask = torch.cat([mask, mask.new_ones(len(ids), 1)], 1)
                    padding = {"attention_mask": mask, "position_ids": padding["position_ids"][:, -1:] + 1}
                step_input = (soft * self.embed_scale).to(weight.dtype).unsqueeze(1)
                out = self.model(inputs_embeds=step_input, use_cache=True, logits_to_keep=1, **padding,
                                 **cache_of(out))
        return torch.stack(soft_tokens, 1), torch.stack(token_ids, 1).tolist()

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids)
