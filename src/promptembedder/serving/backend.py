"""What the server embeds with: any promptembedder `Embedder` (saved PromptEmbedder, baseline, bare backbone) or an
exported folder through sentence-transformers. Both reuse their own `encode` batching; the server adds none.

A backend turns a request's `instruction`/`task`/`prompt_type` into a hashable prompt key (requests with the same
key are batched together) and encodes a list of texts under a key.

An exported folder runs no code of its own unless the server is started with `trust_remote_code`: its
`prompt_pooling.py` is recognised by content hash as the module this package exports, and the installed copy is
used instead (an edited one is refused); `auto_map` entries in its config.json are ignored (transformers' rule).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np

from ..export.exported import load_sentence_transformer as _load_sentence_transformer
from .schema import APIError

EXPORT_RECORD = "promptembedder_export.json"
#: Soft prompts kept per server (LRU): one is K x d floats (80 KB at K=5, d=4096; a deep prompt, every layer's).
DEFAULT_PROMPT_CACHE_SIZE = 256


def check_cache_size(max_size: int) -> None:
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
        raise ValueError(f"--prompt-cache-size must be an integer >= 0, got {max_size!r}")


class PromptCache(OrderedDict):
    """PromptEmbedder's instruction -> soft prompt cache with a bound: the least recently used prompt goes first.
    A server's clients choose the instructions, so an unbounded cache grows with every new one."""

    def __init__(self, max_size: int):
        check_cache_size(max_size)
        super().__init__()
        self.max_size = max_size

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.max_size:
            self.popitem(last=False)


def _unknown_task(task: str, known: list[str]) -> APIError:
    return APIError(400, f"unknown task {task!r}; this server knows: {', '.join(known) or '(none)'}", param="task")


class EmbedderBackend:
    """A promptembedder Embedder. Keys are (instruction, prompt_type); P runs once per instruction (the model
    caches each instruction's soft prompt at inference)."""

    def __init__(self, embedder, tasks: Mapping[str, str] | None = None, default_instruction: str | None = None,
                 batch_size: int = 64, prompt_cache_size: int = DEFAULT_PROMPT_CACHE_SIZE):
        from ..models.prompt_embedder import PromptEmbedder

        self.embedder, self.batch_size = embedder, batch_size
        self.tasks = dict(tasks or {})
        self.default_instruction = default_instruction
        self.dimension = embedder.embedding_dim
        self.accepts_instructions = not (isinstance(embedder, PromptEmbedder) and embedder.generator is None)
        self.generates_prompts = isinstance(embedder, PromptEmbedder) and embedder.generator is not None
        self.prompt_cache = None
        if self.generates_prompts:  # the model's own cache is a plain dict, right for one process's own instructions
            self.prompt_cache = embedder._prompt_cache = PromptCache(prompt_cache_size)
        backbone = getattr(embedder, "backbone", None)
        self.tokenizer = backbone.tokenizer if backbone is not None else None
        self.max_tokens = backbone.max_length if backbone is not None else None

    def key(self, instruction: str | None, task: str | None, prompt_type: str) -> Hashable:
        if task is not None:
            if task not in self.tasks:
                raise _unknown_task(task, list(self.tasks))
            instruction = self.tasks[task]
        if instruction is not None and not self.accepts_instructions:
            raise APIError(400, "this model has no soft prompt (a bare backbone): it takes no instruction or task",
                           param="instruction" if task is None else "task")
        return (self.default_instruction if instruction is None else instruction, prompt_type)

    def encode(self, texts: list[str], key: Hashable) -> np.ndarray:
        instruction, prompt_type = key
        if self.generates_prompts and self.embedder.uses_prompt(prompt_type):
            import torch

            try:  # P first (then cached): what it refuses, e.g. an instruction over its context, is the client's
                with torch.inference_mode():
                    self.embedder.soft_prompt(instruction)
            except ValueError as err:
                raise APIError(400, str(err), param="instruction") from None
        return self.embedder.encode(texts, instruction=instruction, batch_size=self.batch_size,
                                    prompt_type=prompt_type, show_progress_bar=False)

    def token_counts(self, texts: list[str]) -> list[int]:
        return _token_counts(self.tokenizer, texts, self.max_tokens)


class SentenceTransformerBackend:
    """An exported folder (or any sentence-transformers model): tasks are its named prompts; free-text
    instructions need P, which an export no longer has."""

    prompt_cache = None  # the prompts are compiled into tokens

    def __init__(self, path: str | Path, default_task: str | None = None, batch_size: int = 64,
                 device: str | None = None, trust_remote_code: bool = False):
        path = Path(path)
        self.model = _load_sentence_transformer(path, device, trust_remote_code)
        self.batch_size = batch_size
        record = json.loads((path / EXPORT_RECORD).read_text()) if (path / EXPORT_RECORD).exists() else {}
        self.documents_unprompted = record.get("source", {}).get("prompt_on") == "query"
        self.tasks = {name: p for name, p in self.model.prompts.items() if p}
        if default_task is not None and default_task not in self.tasks:
            raise ValueError(f"--task {default_task!r} is not a prompt of {path} (it has: {', '.join(self.tasks)})")
        self.default_task = default_task
        dimension = getattr(self.model, "get_embedding_dimension", None)  # its name from sentence-transformers 6.1
        self.dimension = (dimension or self.model.get_sentence_embedding_dimension)()
        self.tokenizer = self.model.tokenizer

    def key(self, instruction: str | None, task: str | None, prompt_type: str) -> Hashable:
        if instruction is not None:
            raise APIError(400, "an exported model serves only its compiled tasks: pass task (one of "
                           f"{', '.join(self.tasks)}) instead of instruction", param="instruction")
        task = self.default_task if task is None else task
        if task is not None and task not in self.tasks:
            raise _unknown_task(task, list(self.tasks))
        if prompt_type == "document" and self.documents_unprompted:
            return None
        return task

    def encode(self, texts: list[str], key: Hashable) -> np.ndarray:
        return self.model.encode(texts, prompt_name=key, batch_size=self.batch_size, convert_to_numpy=True,
                                 show_progress_bar=False)

    def token_counts(self, texts: list[str]) -> list[int]:
        return _token_counts(self.tokenizer, texts, self.model.max_seq_length)


def _token_counts(tokenizer, texts: list[str], max_tokens: int | None) -> list[int]:
    """Tokens per text for `usage`, truncated as encoding truncates them."""
    if tokenizer is None:
        return [0] * len(texts)
    ids = tokenizer(texts, add_special_tokens=True, truncation=max_tokens is not None, max_length=max_tokens)
    return [len(row) for row in ids["input_ids"]]


def load_backend(reference: str | Path, device: str | None = None, tasks: Mapping[str, str] | None = None,
                 default_instruction: str | None = None, default_task: str | None = None, batch_size: int = 64,
                 prompt_cache_size: int = DEFAULT_PROMPT_CACHE_SIZE, trust_remote_code: bool = False):
    """An exported / sentence-transformers folder (modules.json) or anything `load_embedder` loads."""
    check_cache_size(prompt_cache_size)  # before minutes of loading
    path = Path(reference)
    if (path / "modules.json").exists() and not (path / "promptembedder_config.json").exists():
        if default_instruction is not None or tasks:
            raise ValueError(f"{path} is an exported model: it serves its compiled tasks only (use --task NAME)")
        return SentenceTransformerBackend(path, default_task, batch_size, device, trust_remote_code)
    from ..auto import load_embedder
    from ..evaluation import TASKS

    known = {name: spec.instruction or "" for name, spec in TASKS.items()}
    known.update(tasks or {})
    if default_task is not None:
        if default_task not in known:
            raise ValueError(f"--task {default_task!r} is unknown (known: {', '.join(known)})")
        default_instruction = known[default_task]
    return EmbedderBackend(load_embedder(reference, device=device), known, default_instruction, batch_size,
                           prompt_cache_size)
