"""The alignment W: a linear map from P's token-embedding space into E's input-embedding space (and, for a deep
prompt, W's per-layer companions into E's keys and values: deep_prompt.LayerOffsets). Everything here belongs to E,
so a transfer to a new E starts it afresh.

Initialised by least squares on the tokens both vocabularies share, so that before any training the
soft prompt already lands near the E embeddings of the words P "meant"; otherwise a small random init.
"""

from __future__ import annotations

import torch
from torch import nn

from .deep_prompt import DeepPrompt, KVLayout, LayerOffsets

MIN_SHARED_TOKENS = 64


def _canonical_vocab(tokenizer) -> dict[str, int]:
    """Map each normal token to a tokenizer-independent surface form: ' word' for word starts, 'piece' else.

    WordPiece marks continuations ('##ing'); SentencePiece ('▁word') and byte-level BPE ('Ġword') mark
    word starts. Case is folded when the tokenizer lower-cases its input.
    """
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_tokens)
    wordpiece = any(tok.startswith("##") for tok in vocab)
    lower = bool(getattr(tokenizer, "do_lower_case", False)) or _lowercases(tokenizer)
    canonical: dict[str, int] = {}
    for token, idx in sorted(vocab.items(), key=lambda item: item[1]):
        if token in special or not token.strip("▁Ġ#") or (token.startswith("<") and token.endswith(">")):
            continue
        if wordpiece:
            form = token[2:] if token.startswith("##") else " " + token
        elif token[0] in "▁Ġ":
            form = " " + token[1:]
        else:
            form = token
        canonical.setdefault(form.lower() if lower else form, idx)
    return canonical


def _lowercases(tokenizer) -> bool:
    try:
        return tokenizer.backend_tokenizer.normalizer.normalize_str("AbC") == "abc"
    except AttributeError:
        return False


def shared_token_ids(tokenizer_p, tokenizer_e) -> tuple[list[int], list[int]]:
    """Ids, in P's and in E's vocabulary, of the tokens whose surface forms the two share."""
    vocab_p, vocab_e = _canonical_vocab(tokenizer_p), _canonical_vocab(tokenizer_e)
    if _lowercases(tokenizer_e) and not _lowercases(tokenizer_p):
        lowered: dict[str, int] = {}
        for form, idx in vocab_p.items():
            lowered.setdefault(form.lower(), idx)
        vocab_p = lowered
    shared = sorted(set(vocab_p) & set(vocab_e))
    return [vocab_p[f] for f in shared], [vocab_e[f] for f in shared]


class Alignment(nn.Module):
    """W: P's embedding width -> E's input-embedding width, no bias by default; with `layout` (E's KV cache),
    also the zero-initialised per-layer offsets of a deep prompt."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, layout: KVLayout | None = None):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.layer_offsets = LayerOffsets(out_features, layout) if layout is not None else None
        self.init_method = "random"
        nn.init.normal_(self.linear.weight, std=1.0 / in_features)
        if bias:
            nn.init.zeros_(self.linear.bias)

    def forward(self, soft_tokens: torch.Tensor) -> torch.Tensor | DeepPrompt:
        prompt = self.linear(soft_tokens.to(self.linear.weight.dtype))
        return prompt if self.layer_offsets is None else DeepPrompt(prompt, self.layer_offsets(prompt))

    @torch.no_grad()
    def fit_least_squares(self, source: torch.Tensor, target: torch.Tensor, ridge: float = 1e-3) -> None:
        """Solve min ||source W^T - target||^2 + ridge ||W||^2 (ridge keeps it well posed for few tokens)."""
        x, y = source.double(), target.double()
        gram = x.T @ x
        gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        solution = torch.linalg.solve(gram, x.T @ y)
        self.linear.weight.copy_(solution.T.to(self.linear.weight))
        self.init_method = f"lstsq on {source.shape[0]} shared tokens"

    def init_from_vocabularies(
        self, tokenizer_p, embeddings_p: torch.Tensor, tokenizer_e, embed_e, method: str = "auto"
    ) -> str:
        """Initialise from shared tokens when there are enough (method 'auto'/'lstsq'), else randomly.

        `embeddings_p` is P's embedding matrix; `embed_e` maps E's token ids to what E takes as
        inputs_embeds (its input-embedding layer, including any scaling). Returns what was done.
        """
        if method == "random":
            return self.init_method
        ids_p, ids_e = shared_token_ids(tokenizer_p, tokenizer_e)
        if len(ids_p) < MIN_SHARED_TOKENS:
            if method == "lstsq":
                raise ValueError(f"only {len(ids_p)} shared tokens: too few for a least-squares init of W")
            return self.init_method
        with torch.no_grad():
            source = embeddings_p[torch.tensor(ids_p, device=embeddings_p.device)].float()
            device = next(iter(embed_e.parameters())).device
            target = embed_e(torch.tensor(ids_e, device=device)).float()
        self.fit_least_squares(source.cpu(), target.cpu())
        return self.init_method
