"""The frozen Embedding LLM E: reads the text with a soft prompt through inputs_embeds and pools a vector.

Any Hugging Face model that accepts `inputs_embeds` works, encoder or decoder. E's weights never get
gradients; gradients still flow through E into the soft prompt.

Where the prompt goes (`prompt_position`):
- `prefix`: after the leading BOS/[CLS] (or at the start), before the text.
- `suffix`: after the text, before a trailing special token the tokenizer appends ([SEP], EOS), if any; so
  with last-token pooling on a decoder without a trailing special token (Gemma, Llama, SmolLM2) the pooled
  state is the last soft token's, which has read the whole text, as PromptEOL's closing words are.
- `both`: the same prompt in both places (2K slots).
- `deep`: a prefix of every layer's keys and values (deep_prompt.py), decoders only; the model passes a
  `DeepPrompt`. The text is read after the cached BOS and prompt; pooling sees the text's states only.
- `auto`: `suffix` for a decoder pooled at its last token, `prefix` otherwise.
Pooling: `last` pools the last real position (a soft token under `suffix` as above), `cls` position 0,
`mean` the text tokens only (prompt slots are left out unless `include_prompt_in_mean`). A suffix cannot
change a causal decoder's text states, so `suffix` with mean pooling on a decoder is refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from .config import INPUT_POSITIONS, PROMPT_POSITION_CHOICES
from .deep_prompt import DeepPrompt, KVLayout, kv_layout, prefix_cache
from .pooling import pool
from .registry import load_pretrained


def is_decoder(model: nn.Module) -> bool:
    """Causal LMs pool the last token by default; bidirectional encoders (masked LMs) pool the mean."""
    model_type = model.config.model_type
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def drop_pooler(model: nn.Module) -> nn.Module:
    """Remove an encoder's pooler head (BERT's tanh dense layer): we pool hidden states ourselves, and unused
    trainable weights would break DDP and inflate LoRA's parameter count."""
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


class EmbeddingBackbone(nn.Module):
    """E plus its tokenizer, with soft-prompt insertion and pooling."""

    def __init__(self, model: nn.Module, tokenizer, pooling: str | None = None, max_length: int = 512,
                 freeze: bool = True, prompt_position: str = "prefix"):
        super().__init__()
        self.model = drop_pooler(model)
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        tokenizer.padding_side = "right"  # embeddings then never depend on what else is in the batch
        self.pooling = pooling or ("last" if is_decoder(model) else "mean")
        self.max_length = min(max_length, getattr(tokenizer, "model_max_length", max_length) or max_length)
        if freeze:
            model.requires_grad_(False)
            model.eval()
        if prompt_position not in PROMPT_POSITION_CHOICES:
            raise ValueError(f"prompt_position must be one of {PROMPT_POSITION_CHOICES}, got {prompt_position!r}")
        if prompt_position == "auto":
            prompt_position = "suffix" if self.pooling == "last" and is_decoder(model) else "prefix"
        if prompt_position == "suffix" and self.pooling == "mean" and is_decoder(model):
            raise ValueError("prompt_position='suffix' with mean pooling on a causal decoder: the text tokens never "
                             "see a suffix, so the prompt could not change the embedding; use pooling 'last' or "
                             "prompt_position 'prefix' or 'both'")
        if prompt_position == "deep" and not is_decoder(model):
            raise ValueError(f"prompt_position='deep' needs a decoder E (it prompts through the KV cache); "
                             f"{model.config.model_type} is an encoder: use prefix or suffix")
        self.prompt_position = prompt_position
        self._kv_layout: KVLayout | None = None
        self.prefix_special = self._adds_leading_special_token()
        self.suffix_special = self._adds_trailing_special_token()

    @classmethod
    def load(cls, reference: str, device: torch.device, dtype: torch.dtype, pooling: str | None = None,
             max_length: int = 512, freeze: bool = True, adapt=None,
             prompt_position: str = "prefix") -> EmbeddingBackbone:
        """E and its tokenizer from a reference; `adapt` wraps the model first (e.g. with a peft LoRA adapter)."""
        model = drop_pooler(load_pretrained(AutoModel, reference, device, dtype=dtype).to(device))
        if adapt is not None:
            model = adapt(model)
        return cls(model, load_pretrained(AutoTokenizer, reference), pooling, max_length, freeze, prompt_position)

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def kv_layout(self) -> KVLayout:
        """E's cache layout (layers, key/value heads, head size): what a deep prompt's offsets are shaped to."""
        if self._kv_layout is None:
            self._kv_layout = kv_layout(self.model)
        return self._kv_layout

    def _adds_leading_special_token(self) -> bool:
        ids = self.tokenizer("hello", add_special_tokens=True)["input_ids"]
        return bool(ids) and ids[0] in set(self.tokenizer.all_special_ids)

    def _adds_trailing_special_token(self) -> bool:
        ids = self.tokenizer("hello", add_special_tokens=True)["input_ids"]
        plain = self.tokenizer("hello", add_special_tokens=False)["input_ids"]
        return len(ids) > len(plain) + int(self.prefix_special) and ids[-1] in set(self.tokenizer.all_special_ids)

    @property
    def prompt_copies(self) -> int:
        """How many times the prompt is inserted: 2 for `both`."""
        return 2 if self.prompt_position == "both" else 1

    def tokenize(self, texts: list[str], num_prompt_tokens: int = 0, **kwargs) -> dict[str, torch.Tensor]:
        """Tokenise with room left for the soft prompt (all its copies) inside E's context."""
        return self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length - num_prompt_tokens * self.prompt_copies,
            return_tensors="pt",
            **kwargs,
        ).to(self.device)

    def insert_prompt(
        self, embeds: torch.Tensor, mask: torch.Tensor, prompt: torch.Tensor, position: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Insert a (K, d) or (B, K, d) prompt at `position` (default: this backbone's `prompt_position`).

        Per row, so left and right padding both work: a prefix goes at the first real token (+1 when the
        tokenizer adds BOS/CLS), a suffix after the last real token (-1 when it appends [SEP]/EOS).
        Returns embeddings, attention mask and a mask marking every prompt slot.
        """
        position = position or self.prompt_position
        if position not in INPUT_POSITIONS:
            raise ValueError(f"prompt position must be prefix, suffix or both, got {position!r}")
        marks = torch.zeros_like(mask)
        positions = torch.arange(mask.shape[1], device=mask.device)
        if position in ("suffix", "both"):
            last_real = (mask.long() * (positions + 1)).argmax(dim=1)
            embeds, mask, marks = _insert_at(embeds, mask, marks, prompt, last_real + 1 - int(self.suffix_special))
        if position in ("prefix", "both"):
            first_real = mask.long().argmax(dim=1)
            embeds, mask, marks = _insert_at(embeds, mask, marks, prompt, first_real + int(self.prefix_special))
        return embeds, mask, marks

    def forward(self, texts: list[str], prompt: torch.Tensor | DeepPrompt | None = None, normalize: bool = True,
                include_prompt_in_mean: bool = False) -> torch.Tensor:
        """Embed texts, optionally behind a soft prompt already in E's input-embedding space (a `DeepPrompt` for
        position `deep`)."""
        if isinstance(prompt, DeepPrompt):
            hidden, mask = self._forward_deep(texts, prompt)
            pooled = pool(hidden, mask, self.pooling).float()
            return F.normalize(pooled, dim=-1) if normalize else pooled
        k = 0 if prompt is None else prompt.shape[-2]
        batch = self.tokenize(texts, k)
        embeds = self.model.get_input_embeddings()(batch["input_ids"])
        mask = batch["attention_mask"]
        prompt_mask = None
        if k:
            embeds, mask, prompt_mask = self.insert_prompt(embeds, mask, prompt)
        extra = {}
        if "token_type_ids" in batch:
            extra["token_type_ids"] = torch.zeros_like(mask)
        hidden = self.model(inputs_embeds=embeds, attention_mask=mask, **extra).last_hidden_state
        exclude = None if include_prompt_in_mean else prompt_mask
        pooled = pool(hidden, mask, self.pooling, exclude).float()
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def _forward_deep(self, texts: list[str], prompt: DeepPrompt) -> tuple[torch.Tensor, torch.Tensor]:
        """The text's states behind a cached [BOS +] prompt prefix, and the text's mask. Padded on the right, so
        BOS, when the tokenizer adds one, is column 0 of every row: it moves into the prefix."""
        if self.prompt_position != "deep":
            raise ValueError(f"a deep prompt needs prompt_position 'deep', this backbone's is {self.prompt_position!r}")
        batch = self.tokenize(texts, prompt.embeds.shape[-2], padding_side="right")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        embed = self.model.get_input_embeddings()
        head = embed(ids[0, : int(self.prefix_special)])
        ids, mask = ids[:, int(self.prefix_special):], mask[:, int(self.prefix_special):]
        cache, length = prefix_cache(self.model, head, prompt, ids.shape[0])
        full_mask = torch.cat([mask.new_ones(ids.shape[0], length), mask], dim=1)
        hidden = self.model(inputs_embeds=embed(ids), attention_mask=full_mask, use_cache=True, **cache)
        return hidden.last_hidden_state, mask


def _insert_at(embeds: torch.Tensor, mask: torch.Tensor, marks: torch.Tensor, prompt: torch.Tensor,
               insert_at: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Insert the prompt into each row at its own index; positions after it shift right by K.

    The mask and the prompt marks move with the tokens; the new slots are real (mask 1) and marked.
    """
    batch, length, dim = embeds.shape
    k = prompt.shape[-2]
    prompt = prompt.to(embeds.dtype).expand(batch, k, dim)
    new_pos = torch.arange(length + k, device=embeds.device).unsqueeze(0)
    in_prompt = (new_pos >= insert_at[:, None]) & (new_pos < insert_at[:, None] + k)
    after = new_pos >= insert_at[:, None] + k
    source = torch.where(after, new_pos - k, new_pos).clamp(max=length - 1)
    gathered = embeds.gather(1, source.unsqueeze(-1).expand(-1, -1, dim))
    prompt_index = (new_pos - insert_at[:, None]).clamp(0, k - 1)
    prompt_rows = prompt.gather(1, prompt_index.unsqueeze(-1).expand(-1, -1, dim))
    new_embeds = torch.where(in_prompt.unsqueeze(-1), prompt_rows, gathered)
    new_mask = torch.where(in_prompt, torch.ones_like(in_prompt, dtype=mask.dtype), mask.gather(1, source))
    new_marks = torch.where(in_prompt, torch.ones_like(in_prompt, dtype=marks.dtype), marks.gather(1, source))
    return new_embeds, new_mask, new_marks
