"""An exported folder (see export.py) used through promptembedder itself: `encode`, `evaluate`, `serve`.

The folder holds E with each exported instruction compiled into tokens, and no P, so it can embed with exactly
those instructions and no other: an instruction it was not exported with is refused, never silently dropped (the
folder would otherwise embed as a bare backbone). No code from the folder runs unless asked: our own pooling
module is recognised by content hash and taken from the installed package.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..models.embedder import Embedder
from .exporter import CUSTOM_POOLING_FILE
from .folder import EXPORT_RECORD

SERVE_ADVICE = "export the model again, or pass --trust-remote-code if you trust the code in that folder"


def is_export(path: str | Path) -> bool:
    """A folder written by `promptembedder export`: a sentence-transformers folder with our export record."""
    path = Path(path)
    return (path / "modules.json").is_file() and (path / EXPORT_RECORD).is_file()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_sentence_transformer(path: Path, device: str | None, trust_remote_code: bool, advice: str = SERVE_ADVICE):
    """The folder as a SentenceTransformer, running none of its code unless `trust_remote_code`: our own pooling
    module, recognised by content hash, resolves to the installed copy. `advice` says what to do otherwise."""
    from sentence_transformers import SentenceTransformer

    from . import prompt_pooling

    shipped = path / CUSTOM_POOLING_FILE
    if trust_remote_code or not shipped.exists():
        classes = {}
    elif _sha256(shipped) == _sha256(Path(prompt_pooling.__file__)):
        classes = {f"{shipped.stem}.PromptPooling": prompt_pooling.PromptPooling}
    else:
        raise ValueError(f"{shipped} is not the pooling module this version of promptembedder exports (edited, or "
                         f"from another version), and promptembedder runs no code from a model folder: {advice}")
    try:  # sentence-transformers' own hook for resolving modules.json types to classes already imported
        return SentenceTransformer._load_with_module_classes(str(path), classes, device=device, local_files_only=True,
                                                             trust_remote_code=trust_remote_code)
    except ValueError as err:
        if trust_remote_code or "trust_remote_code" not in str(err):
            raise
        raise ValueError(f"{path} needs code of its own to load, which promptembedder does not run: {advice} "
                         f"({err})") from None


class ExportedEmbedder(Embedder):
    """An exported folder as an `Embedder`: an instruction (its text, or the name it was exported under) selects
    its compiled prompt; no instruction means the default instruction, as for the saved model."""

    def __init__(self, path: str | Path, device: str | torch.device | None = None):
        super().__init__()
        self.path = Path(path)
        record = json.loads((self.path / EXPORT_RECORD).read_text())
        source = record.get("source", {})
        self.instructions: dict[str, str | None] = dict(record.get("instructions", {}))  # None: the default one
        self.default_instruction = source.get("default_instruction", "")
        self.documents_unprompted = source.get("prompt_on") == "query"
        self.normalize = bool(source.get("normalize", True))
        self.model = load_sentence_transformer(self.path, None if device is None else str(device), False,
                                               "export the model again (or use the saved model)")
        dimension = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension  # renamed in sentence-transformers 6.1
        self.embedding_dim = dimension()

    def prompt_name(self, instruction: str | None, prompt_type: str = "query") -> str | None:
        """The compiled prompt for `instruction` (None: the documents of a query-only model read no prompt)."""
        if prompt_type == "document" and self.documents_unprompted:
            return None
        text = self.default_instruction if instruction is None else instruction
        if text == self.default_instruction:  # export compiles it as sentence-transformers' query/document prompts
            side = "document" if prompt_type == "document" and "document" in self.instructions else "query"
            if side in self.instructions and self.instructions[side] is None:
                return side
        if text in self.instructions:
            return text
        for name, compiled in self.instructions.items():
            if compiled == text:
                return name
        what = "the default instruction (used where none is given, and for documents under prompt_on 'both')" \
            if instruction is None else repr(instruction)
        listing = "; ".join(f"{name}: {'(the default instruction)' if text is None else repr(text)}"
                            for name, text in self.instructions.items())
        raise ValueError(f"{self.path} is an exported model: it embeds only the instructions it was exported with "
                         f"({listing}), not {what}. Pass one of those (its text or name), or use the saved model, "
                         "which writes a prompt for any instruction")

    def evaluation_tasks(self) -> list[str]:
        """The evaluation tasks the folder was exported with (`export --tasks`): what `evaluate` scores by default."""
        from ..evaluation import TASKS

        found = [name for name, text in self.instructions.items()
                 if name in TASKS and TASKS[name].instruction is not None and TASKS[name].instruction == text]
        if not found:
            raise ValueError(f"{self.path} was exported with no evaluation task (its prompts: "
                             f"{', '.join(self.instructions)}): export it with --tasks, or pass --tasks naming tasks "
                             "whose instruction it compiled")
        return found

    def embed(self, texts: list[str], instruction: str | None = None, prompt_type: str = "query",
              normalize: bool = True) -> torch.Tensor:
        return self.model.encode(texts, prompt_name=self.prompt_name(instruction, prompt_type), batch_size=len(texts),
                                 convert_to_tensor=True, normalize_embeddings=normalize, show_progress_bar=False)
