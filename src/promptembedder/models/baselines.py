"""The baselines PromptEmbedder is measured against, on the same backbone, pooling and encode API.

- `BackboneEmbedder`: E with the instruction as a plain text prefix; `adapter="lora"` adds peft LoRA on
  E's linear layers (the paper's main baseline), `"full"` fine-tunes all of E, `"none"` is the
  hard-text-instruction backbone. `template` wraps each text in a hard-text prompt, e.g. PromptEOL's.
- `PromptTuningEmbedder`: a static learned soft prompt in frozen E's input (at `prompt_position`), with no P;
  at `deep`, free offsets to every layer's keys and values as well (P-tuning v2).
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..hub.compatibility import check_context
from ..hub.serialization import check_tensors, read_safetensors, write_manifest
from .backbone import EmbeddingBackbone
from .building import add_lora, default_device, frozen_dtype, load_lora
from .config import BaselineConfig
from .deep_prompt import DeepPrompt, static_offsets
from .trainable import TrainableEmbedder

#: PromptEOL (Jiang et al. 2023): a decoder's last token after this reads as a one-word summary of the text.
PROMPTEOL_TEMPLATE = 'This sentence: "{text}" means in one word: "'
PROMPT_FILE = "prompt.safetensors"


def with_instruction(instruction: str | None, text: str) -> str:
    """The E5-style text prefix that carries an instruction to a model without soft prompts."""
    return text if not instruction else f"Instruct: {instruction}\nQuery: {text}"


class BackboneEmbedder(TrainableEmbedder):
    """E itself, with the instruction as text; trainable through LoRA or fully, or not at all."""

    def __init__(self, config: BaselineConfig, device: str | torch.device | None = None):
        super().__init__()
        device = torch.device(device) if device is not None else default_device()
        adapt = partial(add_lora, rank=config.lora_rank, alpha=config.lora_alpha) if config.adapter == "lora" else None
        dtype = torch.float32 if config.adapter == "full" else frozen_dtype(device)
        self.backbone = EmbeddingBackbone.load(config.embedding_model, device, dtype, config.pooling,
                                               config.max_length, freeze=config.adapter == "none", adapt=adapt)
        config.pooling = self.backbone.pooling
        self.config = config
        self.normalize = config.normalize
        self.embedding_dim = self.backbone.hidden_size
        self.eval()

    def embed(self, texts: list[str], instruction: str | None = None, prompt_type: str = "query",
              normalize: bool = True) -> torch.Tensor:
        if self.uses_prompt(prompt_type):
            texts = [with_instruction(instruction, t) for t in texts]
        if self.config.template is not None:
            texts = [self.config.template.replace("{text}", t) for t in texts]
        return self.backbone(texts, None, normalize=normalize)

    @property
    def document_side_trainable(self) -> bool:
        return self.config.adapter != "none"

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory)
        if self.config.adapter == "lora":
            self.backbone.model.save_pretrained(directory / "adapter")
        elif self.config.adapter == "full":
            self.backbone.model.save_pretrained(directory / "model")
            self.backbone.tokenizer.save_pretrained(directory / "model")
        write_manifest(directory, asdict(self.config), _references(self))  # last: the save is complete

    @classmethod
    def load(cls, directory: Path, config: BaselineConfig, device=None) -> BackboneEmbedder:
        if config.adapter == "full":
            config.embedding_model = str(directory / "model")
            return cls(BaselineConfig(**{**asdict(config), "adapter": "none"}), device)
        model = cls(BaselineConfig(**{**asdict(config), "adapter": "none"}), device)
        if config.adapter == "lora":
            model.backbone.model = load_lora(model.backbone.model, directory / "adapter")
            model.config = config
        return model.eval()


def save_prompts(model: TrainableEmbedder, directory: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """A soft-prompt baseline's folder: its config, `tensors` in PROMPT_FILE, and the manifest."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, directory / PROMPT_FILE)
    write_manifest(directory, asdict(model.config), _references(model))


class PromptTuningEmbedder(TrainableEmbedder):
    """A static soft prompt of K learned vectors in E's input-embedding space (Lester et al.), E frozen."""

    def __init__(self, config: BaselineConfig, device: str | torch.device | None = None,
                 init_text: str = "Represent this sentence for retrieving similar sentences"):
        super().__init__()
        device = torch.device(device) if device is not None else default_device()
        self.backbone = EmbeddingBackbone.load(config.embedding_model, device, frozen_dtype(device), config.pooling,
                                               config.max_length, prompt_position=config.prompt_position)
        check_context(config.num_soft_tokens, self.backbone)
        config.pooling = self.backbone.pooling
        config.prompt_position = self.backbone.prompt_position
        self.config = config
        self.normalize = config.normalize
        self.embedding_dim = self.backbone.hidden_size
        ids = self.backbone.tokenizer(init_text, add_special_tokens=False)["input_ids"] or [0]
        ids = (ids * config.num_soft_tokens)[: config.num_soft_tokens]
        with torch.no_grad():  # start from real word embeddings, as peft's TEXT init does
            init = self.backbone.model.get_input_embeddings()(torch.tensor(ids, device=device)).float()
        self.prompt = torch.nn.Parameter(init)
        deep = self.backbone.prompt_position == "deep"  # P-tuning v2: free offsets to every layer's keys and values
        self.offsets = static_offsets(config.num_soft_tokens, self.backbone.kv_layout) if deep else None
        self.eval()

    def train(self, mode: bool = True) -> PromptTuningEmbedder:
        super().train(mode)
        self.backbone.model.eval()
        return self

    def embed(self, texts: list[str], instruction: str | None = None, prompt_type: str = "query",
              normalize: bool = True) -> torch.Tensor:
        if not self.uses_prompt(prompt_type):
            return self.backbone(texts, None, normalize=normalize)
        prompt = self.prompt if self.offsets is None else DeepPrompt(self.prompt, self.offsets)
        return self.backbone(texts, prompt, normalize=normalize)

    @property
    def document_side_trainable(self) -> bool:
        return self.config.prompt_on == "both"

    def save_pretrained(self, directory: str | Path) -> None:
        save_prompts(self, directory, {"prompt": self.prompt,
                                       **({"offsets": self.offsets} if self.offsets is not None else {})})

    @classmethod
    def load(cls, directory: Path, config: BaselineConfig, device=None) -> PromptTuningEmbedder:
        model = cls(config, device)
        saved = read_safetensors(directory / PROMPT_FILE)[0]
        check_tensors(directory / PROMPT_FILE, saved, {"prompt": model.prompt.shape})
        model.prompt.data.copy_(saved["prompt"])
        if model.offsets is not None:
            if "offsets" not in saved:
                raise ValueError(f"{directory / PROMPT_FILE} has no 'offsets' for its deep prompt: the save is "
                                 "incomplete; save the model again")
            check_tensors(directory / PROMPT_FILE, saved, {"offsets": model.offsets.shape})
            model.offsets.data.copy_(saved["offsets"])
        return model.eval()


def _references(model: TrainableEmbedder) -> dict[str, tuple[str, object]]:
    """E, held by reference, with its config (for the manifest's hash)."""
    return {"embedding_model": (model.config.embedding_model, model.backbone.model.config)}
