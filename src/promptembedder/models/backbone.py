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

Read once: for the same reason, with `suffix` on a causal E pooled at its last token, the text's keys and values at
every layer do not depend on the prompt. Whenever the prompt needs a gradient (training), E reads the text once
without a graph (its KV cache) and only the K prompt positions (and a trailing special token) run with a graph over
that cache: the same embeddings and gradients as the full forward, with activations stored for K positions instead of
L + K. Several prompts for one text (`embed_prompts`: one text, several instructions) read one text cache the same
way. `read_once = False` runs every position with a graph (for comparison, or as an escape hatch).
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

from ..hub.registry import load_pretrained
from .activation_checkpointing import is_checkpointed
from .config import INPUT_POSITIONS, PROMPT_POSITION_CHOICES
from .deep_prompt import DeepPrompt, KVLayout, kv_layout, prefix_cache
from .kv_cache import cache_keyword, new_cache, repeat_rows
from .pooling import pool


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

    #: Read the text once where a suffix allows it (see the module's docstring); a run sets it from
    #: `TrainingConfig.read_once`.
    read_once: bool = True

    def __init__(self, model: nn.Module, tokenizer, pooling: str | None = None, max_length: int = 512,
                 freeze: bool = True, prompt_position: str = "prefix"):
        super().__init__()
        self.model = drop_pooler(model)
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        tokenizer.padding_side = "right"  # embeddings then never depend on what else is in the batch
        self._decoder = is_decoder(model)
        self.pooling = pooling or ("last" if self._decoder else "mean")
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
        if prompt is not None and prompt.requires_grad and prompt.dim() == 2 and self.can_read_once():
            pooled = self._read_once(texts, prompt.unsqueeze(0))[0]
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

    def can_read_once(self) -> bool:
        """Whether E may read the text once, without a graph, and the prompt over its cache: `read_once` on, a suffix
        on a causal E pooled at its last token (no text token attends to the prompt), E frozen (nothing of E's needs
        the text's graph) and not checkpointed (recomputing a block in backward would extend its cache again)."""
        return (self.read_once and self.prompt_position == "suffix" and self.pooling == "last" and self._decoder
                and not any(p.requires_grad for p in self.model.parameters()) and not is_checkpointed(self.model))

    def embed_prompts(self, texts: list[str], prompts: list[torch.Tensor | DeepPrompt], normalize: bool = True
                      ) -> torch.Tensor:
        """(M, B, d): the texts behind each of M prompts. Where `can_read_once`, E reads each text once and the M
        prompts read its cache together; otherwise one full forward per prompt."""
        if prompts and all(torch.is_tensor(p) and p.dim() == 2 for p in prompts) and self.can_read_once():
            pooled = self._read_once(texts, torch.stack(prompts))
            return F.normalize(pooled, dim=-1) if normalize else pooled
        return torch.stack([self(texts, prompt, normalize) for prompt in prompts])

    def _read_once(self, texts: list[str], prompts: torch.Tensor) -> torch.Tensor:
        """Last-token states (M, B, d) of the texts behind each of M prompts (M, K, d).

        The texts go through E without a graph, left-padded with each row's own positions (so every row ends at the
        last column, and a sliding-window layer's window counts real distances); then each prompt, followed by the
        trailing special token where the tokenizer appends one, runs with a graph over its own rows of that cache, at
        the positions that follow each row's text. Row i * M + j of the second forward is text i behind prompt j.
        """
        count, k = prompts.shape[0], prompts.shape[-2]
        batch = self.tokenize(texts, k, padding_side="left")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        embed = self.model.get_input_embeddings()
        text_end = ids.shape[1] - int(self.suffix_special)
        text_mask = mask[:, :text_end]
        # A cache of our own making (the model's own kind in recent transformers): older versions gave Gemma 2 and 3 a
        # fixed-size HybridCache of exactly the text's length, with no room for the prompt.
        cache = new_cache(self.model.config)
        with torch.no_grad():
            self.model(inputs_embeds=embed(ids[:, :text_end]), attention_mask=text_mask,
                       position_ids=(text_mask.cumsum(-1) - 1).clamp(min=0), use_cache=True,
                       **{cache_keyword(self.model): cache})
        cache = {cache_keyword(self.model): repeat_rows(cache, count)}
        text_mask = text_mask.repeat_interleave(count, 0)
        tail = prompts.to(embed.weight.dtype).repeat(len(texts), 1, 1)
        if self.suffix_special:
            tail = torch.cat([tail, embed(ids[:, text_end:]).repeat_interleave(count, 0)], dim=1)
        positions = text_mask.sum(1, keepdim=True) + torch.arange(tail.shape[1], device=ids.device)
        full_mask = torch.cat([text_mask, text_mask.new_ones(tail.shape[:2])], dim=1)
        hidden = self.model(inputs_embeds=tail, attention_mask=full_mask, position_ids=positions, use_cache=True,
                            **cache).last_hidden_state
        return hidden[:, -1].float().view(len(texts), count, -1).transpose(0, 1)

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
