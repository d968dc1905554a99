"""What the server embeds with: any promptembedder `Embedder` (saved PromptEmbedder, baseline, bare backbone) or an
exported folder through sentence-transformers. Both reuse their own `encode` batching; the server adds none.

A backend turns a request's `instruction`/`task`/`prompt_type` into a hashable prompt key (requests with the same
key are batched together) and encodes a list of texts under a key.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np

from .schema import APIError

EXPORT_RECORD = "promptembedder_export.json"


def _unknown_task(task: str, known: list[str]) -> APIError:
    return APIError(400, f"unknown task {task!r}; this server knows: {', '.join(known) or '(none)'}", param="task")


class EmbedderBackend:
    """A promptembedder Embedder. Keys are (instruction, prompt_type); P runs once per instruction (the model
    caches each instruction's soft prompt at inference)."""

    def __init__(self, embedder, tasks: Mapping[str, str] | None = None, default_instruction: str | None = None,
                 batch_size: int = 64):
        from ..model import PromptEmbedder

        self.embedder, self.batch_size = embedder, batch_size
        self.tasks = dict(tasks or {})
        self.default_instruction = default_instruction
        self.dimension = embedder.embedding_dim
        self.accepts_instructions = not (isinstance(embedder, PromptEmbedder) and embedder.generator is None)
        backbone = getattr(embedder, "backbone", None)
        self.tokenizer = backbone.tokenizer if backbone is not None else None

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
        return self.embedder.encode(texts, instruction=instruction, batch_size=self.batch_size,
                                    prompt_type=prompt_type, show_progress_bar=False)

    def token_counts(self, texts: list[str]) -> list[int]:
        if self.tokenizer is None:
            return [0] * len(texts)
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]


class SentenceTransformerBackend:
    """An exported folder (or any sentence-transformers model): tasks are its named prompts; free-text
    instructions need P, which an export no longer has."""

    def __init__(self, path: str | Path, default_task: str | None = None, batch_size: int = 64,
                 device: str | None = None):
        from sentence_transformers import SentenceTransformer

        path = Path(path)
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True,
                                         trust_remote_code=(path / "prompt_pooling.py").exists())
        self.batch_size = batch_size
        record = json.loads((path / EXPORT_RECORD).read_text()) if (path / EXPORT_RECORD).exists() else {}
        self.documents_unprompted = record.get("source", {}).get("prompt_on") == "query"
        self.tasks = {name: p for name, p in self.model.prompts.items() if p}
        if default_task is not None and default_task not in self.tasks:
            raise ValueError(f"--task {default_task!r} is not a prompt of {path} (it has: {', '.join(self.tasks)})")
        self.default_task = default_task
        self.dimension = self.model.get_sentence_embedding_dimension()
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
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]


def load_backend(reference: str | Path, device: str | None = None, tasks: Mapping[str, str] | None = None,
                 default_instruction: str | None = None, default_task: str | None = None, batch_size: int = 64):
    """An exported / sentence-transformers folder (modules.json) or anything `load_embedder` loads."""
    path = Path(reference)
    if (path / "modules.json").exists() and not (path / "promptembedder_config.json").exists():
        if default_instruction is not None or tasks:
            raise ValueError(f"{path} is an exported model: it serves its compiled tasks only (use --task NAME)")
        return SentenceTransformerBackend(path, default_task, batch_size, device)
    from ..auto import load_embedder
    from ..evaluation import TASKS

    known = {name: spec.instruction or "" for name, spec in TASKS.items()}
    known.update(tasks or {})
    if default_task is not None:
        if default_task not in known:
            raise ValueError(f"--task {default_task!r} is unknown (known: {', '.join(known)})")
        default_instruction = known[default_task]
    return EmbedderBackend(load_embedder(reference, device=device), known, default_instruction, batch_size)
