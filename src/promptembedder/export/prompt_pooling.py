"""A sentence-transformers Pooling module for exported PromptEmbedders with mean pooling.

Self-contained on purpose (torch and sentence-transformers >= 6 only): `promptembedder export` copies this file
into the exported folder, which sentence-transformers loads with `trust_remote_code=True`, so the folder
needs nothing of ours. Why a custom module: PromptEmbedder inserts the prompt after the leading special token
([CLS]/BOS) and averages every other real token, the leading one included; sentence-transformers'
`Pooling(include_prompt=False)` drops the whole tokenised prompt, the leading token with it.
"""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.sentence_transformer.modules import Pooling


class PromptPooling(Pooling):
    """Mean over real tokens, leaving out positions [offset, prompt_length) of each row (after its padding).

    `prompt_length` is what sentence-transformers measures for the prompt (its tokens with the leading
    special token, without a trailing one); `prompt_offset` is how many leading special tokens to keep.
    """

    config_keys = [*Pooling.config_keys, "prompt_offset"]

    def __init__(self, embedding_dimension: int, pooling_mode: str = "mean", include_prompt: bool = False,
                 prompt_offset: int = 1):
        if pooling_mode != "mean" or include_prompt:
            raise ValueError("PromptPooling is mean pooling that leaves the prompt out: pooling_mode='mean', "
                             f"include_prompt=False (got {pooling_mode!r}, {include_prompt!r})")
        super().__init__(embedding_dimension, pooling_mode="mean", include_prompt=False)
        self.prompt_offset = prompt_offset

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        if "cu_seq_lens_q" in features:
            raise ValueError("PromptPooling needs padded token embeddings; load the model without unpadding")
        hidden = features["token_embeddings"]
        mask = features["attention_mask"].to(hidden.dtype)
        prompt_length = features.get("prompt_length")
        if prompt_length is not None:
            length = int(prompt_length[0].item()) if isinstance(prompt_length, torch.Tensor) else int(prompt_length)
            first_real = features["attention_mask"].long().argmax(dim=1, keepdim=True)
            positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
            in_prompt = (positions >= first_real + self.prompt_offset) & (positions < first_real + length)
            mask = mask.masked_fill(in_prompt, 0)
        total = (hidden * mask.unsqueeze(-1)).sum(dim=1)
        features["sentence_embedding"] = total / mask.sum(dim=1, keepdim=True).clamp(min=1e-9)
        return features
