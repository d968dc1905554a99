"""What every embedder here shares: a differentiable `embed` and a sentence-transformers style `encode`.

PromptEmbedder and the baselines (LoRA, prompt tuning) only implement `embed`; batching, length
sorting, progress, input checks and numpy conversion live here once.
"""

from __future__ import annotations

import sys
from collections import ChainMap
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.instructions import SUITE_PROMPTS

PROMPT_TYPES = ("query", "document")


class TaskPromptLike(Protocol):
    """What a `prompt_name` names: a task's instruction and its second side's prompt type (`data.TaskPrompt`, or
    anything shaped alike, such as evaluation's `TaskSpec`)."""

    @property
    def instruction(self) -> str | None: ...

    @property
    def document_prompt_type(self) -> str: ...


_PROMPT_REGISTRIES: ChainMap[str, TaskPromptLike] = ChainMap(SUITE_PROMPTS)  # read only, through TASK_PROMPTS
#: Every `prompt_name` an embedder knows (read-only): the evaluation suite's tasks, and the registries added with
#: `include_prompts`. evaluation adds its `TASKS`, so a task registered there resolves too, without this layer
#: importing evaluation.
TASK_PROMPTS: Mapping[str, TaskPromptLike] = MappingProxyType(_PROMPT_REGISTRIES)


def include_prompts(registry: Mapping[str, TaskPromptLike]) -> None:
    """Let `prompt_name` resolve `registry`'s names too, ahead of those known so far. The mapping is read at each
    lookup, so names added to it later resolve as well."""
    if all(known is not registry for known in _PROMPT_REGISTRIES.maps):
        _PROMPT_REGISTRIES.maps.insert(0, registry)


def check_texts(texts: object) -> tuple[list[str], bool]:
    """Validate encode's input; returns the list and whether a single string was given."""
    if isinstance(texts, str):
        texts = [texts]
        single = True
    else:
        single = False
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
        if not text.strip():
            raise ValueError(f"texts[{i}] is empty: an empty text has no embedding")
    return list(texts), single


def check_instructions(instruction: object) -> list[str | None] | None:
    """encode's `instruction`: None or one string (returned as None: one matrix), or a non-empty list of them."""
    if instruction is None or isinstance(instruction, str):
        return None
    if not isinstance(instruction, Sequence) or not instruction:
        raise TypeError(f"instruction must be a string, None or a non-empty list of them, got {instruction!r}")
    for i, item in enumerate(instruction):
        if item is not None and not isinstance(item, str):
            raise TypeError(f"instruction[{i}] is {type(item).__name__}, not str or None")
    return list(instruction)


class Embedder(nn.Module):
    """Base class: subclasses implement `embed(texts, instruction, prompt_type)` returning (B, d) tensors."""

    embedding_dim: int
    normalize: bool = True
    #: Whether encoding documents needs gradients in training; when not, their embeddings can be cached.
    document_side_trainable: bool = True

    def embed(self, texts: list[str], instruction: str | None = None, prompt_type: str = "query",
              normalize: bool = True) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, texts: list[str], instruction: str | None = None, prompt_type: str = "query",
                normalize: bool = True) -> torch.Tensor:
        return self.embed(texts, instruction, prompt_type, normalize)

    def embed_instructions(self, texts: list[str], instructions: list[str | None], prompt_type: str = "query",
                           normalize: bool = True) -> torch.Tensor:
        """(M, B, d): the texts under each of M instructions. One `embed` each here; a model that can read each
        text once for all of them overrides it (PromptEmbedder with a suffix prompt on a causal E)."""
        return torch.stack([self.embed(texts, i, prompt_type, normalize) for i in instructions])

    def encode(
        self,
        texts: str | Sequence[str],
        instruction: str | None | Sequence[str | None] = None,
        batch_size: int = 32,
        normalize: bool | None = None,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        prompt_type: str = "query",
    ) -> np.ndarray | torch.Tensor:
        """Embed texts without gradients; one string gives one vector, a list gives a (n, d) matrix.

        Texts are sorted by length so each batch pads little, and results come back in input order. A list of
        instructions gives one matrix per instruction, stacked: (M, n, d), or (M, d) for one string; each text is
        read once for all of them where the model can (`embed_instructions`).
        """
        texts, single = check_texts(texts)
        instructions = check_instructions(instruction)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if prompt_type not in PROMPT_TYPES:
            raise ValueError(f"prompt_type must be one of {PROMPT_TYPES}, got {prompt_type!r}")
        normalize = self.normalize if normalize is None else normalize
        order = np.argsort([-len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), batch_size)
        if show_progress_bar is None:
            show_progress_bar = len(starts) > 1 and sys.stderr.isatty()
        was_training = self.training
        self.eval()
        chunks = []
        try:
            with torch.inference_mode():
                for start in tqdm(starts, desc="Batches", disable=not show_progress_bar):
                    batch = [texts[i] for i in order[start : start + batch_size]]
                    embedded = (self.embed(batch, instruction, prompt_type, normalize) if instructions is None
                                else self.embed_instructions(batch, instructions, prompt_type, normalize))
                    chunks.append(embedded.float().cpu())
        finally:
            self.train(was_training)
        if chunks:
            stacked = torch.cat(chunks, dim=-2)
            result = torch.empty_like(stacked).index_copy_(-2, torch.as_tensor(order), stacked)
        else:
            result = torch.empty(*([] if instructions is None else [len(instructions)]), 0, self.embedding_dim)
        if single:
            result = result[..., 0, :]
        return result.numpy() if convert_to_numpy else result

    # --- sentence-transformers' names -----------------------------------------------------------------------
    #: How `similarity` compares embeddings (sentence-transformers' attribute): cosine, dot, euclidean, manhattan.
    similarity_fn_name: str = "cosine"
    #: sentence-transformers' `prompts` (a prompt table's `prompts` are its soft prompts): the names `prompt_name`
    #: may give, each a task's instruction and document side. All embedders share `TASK_PROMPTS`; give one model
    #: its own mapping to change its names alone.
    task_prompts: Mapping[str, TaskPromptLike] = TASK_PROMPTS

    def encode_query(self, inputs: str | Sequence[str], prompt_name: str | None = None, prompt: str | None = None,
                     batch_size: int = 32, show_progress_bar: bool | None = None, convert_to_numpy: bool = True,
                     convert_to_tensor: bool = False, normalize_embeddings: bool | None = None,
                     truncate_dim: int | None = None) -> np.ndarray | torch.Tensor:
        """sentence-transformers' `encode_query`: the query side, behind the instruction's prompt.

        `prompt` is the instruction P writes the prompt from; `prompt_name` a task name (`sts-b`, `scifact`, ...:
        its evaluation instruction, as `serve`'s `task` and `export --tasks`); neither: the default instruction.
        """
        instruction, _ = _instruction(self.task_prompts, prompt_name, prompt, "query")
        return self._encode_side(inputs, instruction, "query", batch_size, show_progress_bar, convert_to_numpy,
                                 convert_to_tensor, normalize_embeddings, truncate_dim)

    def encode_document(self, inputs: str | Sequence[str], prompt_name: str | None = None,
                        prompt: str | None = None, batch_size: int = 32, show_progress_bar: bool | None = None,
                        convert_to_numpy: bool = True, convert_to_tensor: bool = False,
                        normalize_embeddings: bool | None = None,
                        truncate_dim: int | None = None) -> np.ndarray | torch.Tensor:
        """sentence-transformers' `encode_document`: the document side, as evaluation encodes it. A model trained
        with `prompt_on='query'` reads documents bare; with `prompt_on='both'` behind the instruction's prompt
        (`prompt`). A `prompt_name` task encodes its second side: no instruction for retrieval (the default
        instruction's prompt under `both`), the task's instruction for symmetric tasks (STS, pairs)."""
        instruction, prompt_type = _instruction(self.task_prompts, prompt_name, prompt, "document")
        return self._encode_side(inputs, instruction, prompt_type, batch_size, show_progress_bar, convert_to_numpy,
                                 convert_to_tensor, normalize_embeddings, truncate_dim)

    def _encode_side(self, inputs, instruction, prompt_type, batch_size, show_progress_bar, convert_to_numpy,
                     convert_to_tensor, normalize_embeddings, truncate_dim) -> np.ndarray | torch.Tensor:
        if truncate_dim is not None and not 0 < truncate_dim <= self.embedding_dim:
            raise ValueError(f"truncate_dim must be in 1..{self.embedding_dim}, got {truncate_dim}")
        vectors = self.encode(inputs, instruction=instruction, batch_size=batch_size, normalize=normalize_embeddings,
                              show_progress_bar=show_progress_bar, convert_to_numpy=False, prompt_type=prompt_type)
        if truncate_dim is not None:  # as sentence-transformers: the first coordinates, then normalised
            vectors = vectors[..., :truncate_dim]
            if self.normalize if normalize_embeddings is None else normalize_embeddings:
                vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.numpy() if convert_to_numpy and not convert_to_tensor else vectors

    def similarity(self, embeddings1, embeddings2) -> torch.Tensor:
        """sentence-transformers' `similarity`: (n1, n2) scores by `similarity_fn_name` (default cosine)."""
        from .similarity import as_matrix, similarity

        return similarity(as_matrix(embeddings1, "embeddings1"), as_matrix(embeddings2, "embeddings2"),
                          self.similarity_fn_name)

    def similarity_pairwise(self, embeddings1, embeddings2) -> torch.Tensor:
        """sentence-transformers' `similarity_pairwise`: (n,) scores of row i against row i."""
        from .similarity import as_matrix, similarity_pairwise

        return similarity_pairwise(as_matrix(embeddings1, "embeddings1"), as_matrix(embeddings2, "embeddings2"),
                                   self.similarity_fn_name)


def _instruction(task_prompts: Mapping[str, TaskPromptLike], prompt_name: str | None, prompt: str | None,
                 side: str) -> tuple[str | None, str]:
    """(instruction, prompt_type) for encode_query / encode_document, from sentence-transformers' arguments."""
    if prompt_name is not None and prompt is not None:
        raise ValueError("give prompt (an instruction) or prompt_name (a task name), not both")
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"prompt must be an instruction string, got {type(prompt).__name__}")
    if prompt_name is None:
        return prompt, side
    if not isinstance(prompt_name, str):
        raise TypeError(f"prompt_name must be a task name (a string), got {type(prompt_name).__name__}")
    spec = task_prompts.get(prompt_name) or task_prompts.get(prompt_name.lower())
    if spec is None:
        raise ValueError(f"unknown prompt_name {prompt_name!r} (known tasks: {', '.join(task_prompts)}); or give "
                         "the instruction itself as prompt")
    if side == "document" and spec.document_prompt_type == "document":
        return None, "document"
    return spec.instruction, "query"  # symmetric tasks read both sides as queries, as evaluation does
