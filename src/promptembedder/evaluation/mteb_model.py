"""Run any promptembedder `Embedder` through MTEB 2.x: `mteb.evaluate(MTEBModel(embedder), tasks)`.

MTEB hands an encoder a DataLoader of batches plus the task's metadata; our models instead take an
instruction and a prompt_type. This adapter maps one to the other (task name override, else a default per task
type) and implements MTEB's `EncoderProtocol` structurally, so mteb is imported only when the adapter is built
and the package itself never depends on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.datasets import STS_INSTRUCTION
from ..models.embedder import Embedder

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.models import ModelMeta
    from mteb.types import PromptType

__all__ = [
    "DEFAULT_TYPE_INSTRUCTIONS",
    "GENERIC_INSTRUCTION",
    "RETRIEVAL_INSTRUCTION",
    "RETRIEVAL_TASK_TYPES",
    "MTEBModel",
]

MTEB_EXTRA = "pip install 'promptembedder[mteb]'"

RETRIEVAL_INSTRUCTION = "Given a query, retrieve relevant passages that answer the query."
GENERIC_INSTRUCTION = "Represent the text to identify its topic and meaning."

#: Asymmetric task types: queries get the instruction, documents get none and prompt_type "document".
RETRIEVAL_TASK_TYPES = frozenset({"Retrieval", "Reranking", "InstructionRetrieval", "InstructionReranking"})

#: Instruction per MTEB task type; types not listed get GENERIC_INSTRUCTION.
DEFAULT_TYPE_INSTRUCTIONS: dict[str, str | None] = {
    "STS": STS_INSTRUCTION,
    "Summarization": STS_INSTRUCTION,
    "PairClassification": STS_INSTRUCTION,
    **{task_type: RETRIEVAL_INSTRUCTION for task_type in RETRIEVAL_TASK_TYPES},
    "Classification": GENERIC_INSTRUCTION,
    "MultilabelClassification": GENERIC_INSTRUCTION,
    "Clustering": GENERIC_INSTRUCTION,
}

#: A task-name override is an instruction (or None for none), or one per side: {"query": ..., "document": ...}.
InstructionOverride = str | None | Mapping[str, str | None]


def _require_mteb() -> Any:
    """Import mteb or fail with the install command, instead of an ImportError deep inside a run."""
    try:
        import mteb
    except ImportError as err:
        raise ImportError(f"the MTEB adapter needs mteb>=2.0, which is not installed: {MTEB_EXTRA}") from err
    major = int(str(getattr(mteb, "__version__", "0")).split(".")[0] or 0)
    if major < 2:
        raise ImportError(f"the MTEB adapter needs mteb>=2.0, found {mteb.__version__}: {MTEB_EXTRA}")
    return mteb


def _check_override(key: str, value: object) -> None:
    if value is None or isinstance(value, str):
        return
    if isinstance(value, Mapping):
        unknown = set(value) - {"query", "document"}
        if unknown:
            raise ValueError(f"instruction override for {key!r}: unknown sides {sorted(unknown)} "
                             "(use 'query' and 'document')")
        for side, text in value.items():
            if text is not None and not isinstance(text, str):
                raise TypeError(f"instruction override for {key!r}[{side!r}] must be a string or None")
        return
    raise TypeError(f"instruction override for {key!r} must be a string, None or a dict, got {type(value).__name__}")


class MTEBModel:
    """An MTEB 2.x encoder (`mteb.models.EncoderProtocol`) around a promptembedder `Embedder`.

    Instruction lookup for a batch: `task_instructions[task name]` (a string, None, or a per-side dict), else
    (only with `use_task_prompts=True`) the prompt MTEB's task metadata carries, else
    `type_instructions[task type]` (merged over `DEFAULT_TYPE_INSTRUCTIONS`), else `GENERIC_INSTRUCTION`.
    In retrieval-like tasks documents get no instruction and prompt_type "document" unless a per-side
    override says otherwise; everywhere else both sides are symmetric. Similarity is cosine.

    `revision` defaults to a fingerprint of the config, the weights and the instruction maps: MTEB's result
    cache is keyed by name and revision and skips tasks it has results for, so two checkpoints must never
    share one.
    """

    def __init__(
        self,
        embedder: Embedder,
        model_name: str | None = None,
        revision: str | None = None,
        task_instructions: Mapping[str, InstructionOverride] | None = None,
        type_instructions: Mapping[str, str | None] | None = None,
        batch_size: int | None = None,
        use_task_prompts: bool = False,
    ) -> None:
        _require_mteb()
        if not isinstance(embedder, Embedder):
            raise TypeError(f"embedder must be a promptembedder Embedder, got {type(embedder).__name__}")
        self.model = embedder
        self.task_instructions: dict[str, InstructionOverride] = dict(task_instructions or {})
        for key, value in self.task_instructions.items():
            _check_override(key, value)
        self.type_instructions: dict[str, str | None] = {**DEFAULT_TYPE_INSTRUCTIONS, **(type_instructions or {})}
        self.batch_size = batch_size
        self.use_task_prompts = use_task_prompts
        self.model_name = model_name or self._default_name()
        if "/" not in self.model_name:
            self.model_name = f"promptembedder/{self.model_name}"  # MTEB requires "organisation/name"
        self.revision = revision or self._fingerprint()
        self._meta: ModelMeta | None = None

    # --- metadata -------------------------------------------------------------------------------------
    def _default_name(self) -> str:
        config = getattr(self.model, "config", None)
        if config is None:
            return f"promptembedder/{type(self.model).__name__}"
        backbone = str(config.embedding_model).replace("/", "--")
        if config.num_soft_tokens == 0:
            return f"promptembedder/{backbone}"
        prompting = str(config.prompting_model).replace("/", "--")
        return f"promptembedder/{prompting}-{backbone}-k{config.num_soft_tokens}"

    def _fingerprint(self) -> str:
        """A short hash of config, parameters (name, shape, sum, norm) and instruction maps."""
        digest = hashlib.sha256()
        config = getattr(self.model, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            digest.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
        with torch.no_grad():
            for name, param in self.model.state_dict().items():
                if not torch.is_floating_point(param):
                    digest.update(f"{name}{tuple(param.shape)}".encode())
                    continue
                p = param.detach()  # sums in float64 without copying the whole tensor to float64
                total, norm = p.sum(dtype=torch.float64).item(), torch.linalg.vector_norm(p.float()).item()
                digest.update(f"{name}{tuple(p.shape)}{total:.10e}{norm:.10e}".encode())
        instructions = {"task": self.task_instructions, "type": self.type_instructions,
                        "task_prompts": self.use_task_prompts}
        digest.update(json.dumps(instructions, sort_keys=True, default=str).encode())
        return digest.hexdigest()[:12]

    @property
    def mteb_model_meta(self) -> ModelMeta:
        """MTEB's description of the model: name, revision, dimension, cosine similarity, uses instructions."""
        if self._meta is None:
            from mteb.models import ModelMeta

            config = getattr(self.model, "config", None)
            self._meta = ModelMeta(
                loader=None,
                name=self.model_name,
                revision=self.revision,
                release_date=None,
                languages=None,
                n_parameters=sum(p.numel() for p in self.model.parameters()),
                memory_usage_mb=None,
                max_tokens=getattr(config, "max_length", None),
                embed_dim=int(self.model.embedding_dim),
                license=None,
                open_weights=None,
                public_training_code=None,
                public_training_data=None,
                framework=["PyTorch"],
                similarity_fn_name="cosine",
                use_instructions=True,
                training_datasets=None,
            )
        return self._meta

    # --- instructions -----------------------------------------------------------------------------------
    def instruction_for(self, task_metadata: TaskMetadata, prompt_type: PromptType | str | None
                        ) -> tuple[str | None, str]:
        """(instruction, our prompt_type) for one encode call of a task, per the lookup order in the class doc."""
        side = "document" if prompt_type is not None and str(getattr(prompt_type, "value", prompt_type)) == \
            "document" else "query"
        task_type = str(task_metadata.type)
        if task_metadata.name in self.task_instructions:
            override = self.task_instructions[task_metadata.name]
            if isinstance(override, Mapping):
                return override.get(side), side
            if side == "document" and task_type in RETRIEVAL_TASK_TYPES:
                return None, side
            return override, side
        if side == "document" and task_type in RETRIEVAL_TASK_TYPES:
            return None, side
        prompt = task_metadata.prompt if self.use_task_prompts else None
        if isinstance(prompt, Mapping):
            prompt = prompt.get(side)
        if prompt:
            return prompt, side
        return self.type_instructions.get(task_type, GENERIC_INSTRUCTION), side

    # --- the protocol -------------------------------------------------------------------------------------
    def encode(
        self,
        inputs: Iterable[Mapping[str, Any]],
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every text of MTEB's DataLoader in one `Embedder.encode` call, so our length sorting applies.

        Retrieval queries arrive with any per-query instruction already joined into `text` by MTEB.
        """
        texts: list[str] = []
        for batch in inputs:
            if "text" not in batch:
                raise ValueError(f"{task_metadata.name}: only text inputs are supported, got {sorted(batch)}")
            texts.extend(batch["text"])
        instruction, side = self.instruction_for(task_metadata, prompt_type)
        batch_size = self.batch_size or kwargs.get("batch_size") or 32
        # Our encode rejects empty texts, but some MTEB corpora hold a few: they get a zero vector (cosine 0).
        keep = [i for i, text in enumerate(texts) if text.strip()]
        result = np.zeros((len(texts), self.model.embedding_dim), dtype=np.float32)
        if keep:
            result[keep] = self.model.encode(
                [texts[i] for i in keep], instruction=instruction, batch_size=batch_size, prompt_type=side,
                show_progress_bar=kwargs.get("show_progress_bar"), convert_to_numpy=True,
            )
        return result

    def similarity(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """All-pairs cosine similarity, (n1, n2)."""
        from mteb.similarity_functions import cos_sim

        return cos_sim(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """Row-wise cosine similarity, (n,)."""
        from mteb.similarity_functions import pairwise_cos_sim

        return pairwise_cos_sim(embeddings1, embeddings2)

    def __repr__(self) -> str:
        return f"MTEBModel({self.model_name!r}, revision={self.revision!r})"

