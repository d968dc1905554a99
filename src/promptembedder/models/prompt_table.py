"""A table of static soft prompts, one per training instruction: what P must beat to be worth its parameters.

P maps an instruction to a prompt; the cheapest model that can still give each training instruction its own prompt
is a lookup table of learned prompts (prompt tuning, one row per instruction). It cannot read an instruction it was
not trained on, so an unseen instruction falls back to the row of the nearest training instruction, by E's own
embedding of the instruction text (E frozen, no prompt; PromptEOL's template on a decoder, whose bare last token
embeds poorly). No instruction at all takes the table's mean prompt.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..hub.compatibility import check_context
from ..hub.serialization import read_safetensors
from .backbone import EmbeddingBackbone, is_decoder
from .baselines import PROMPT_FILE, PROMPTEOL_TEMPLATE, save_prompts
from .building import default_device, frozen_dtype
from .config import BASELINE_CONFIG, BaselineConfig
from .trainable import TrainableEmbedder

INIT_TEXT = "Represent this sentence for retrieving similar sentences"


class PromptTableEmbedder(TrainableEmbedder):
    """`config.instructions` (the training instructions, "" for none) -> one learned K-token prompt each, E frozen.

    One parameter per row, so a row that is not in a batch gets no gradient and AdamW leaves it alone (under DDP
    that needs `find_unused_parameters`, which the trainer does not set: train it in one process).
    """

    def __init__(self, config: BaselineConfig, device: str | torch.device | None = None):
        super().__init__()
        if not config.instructions:
            raise ValueError("prompt-table needs its training instructions (BaselineConfig.instructions): train it "
                             "with `promptembedder train --method prompt-table`, which fills them from the data")
        if config.prompt_position == "deep":
            raise ValueError("prompt-table keeps input-level prompts: prompt_position 'deep' is not supported")
        device = torch.device(device) if device is not None else default_device()
        self.backbone = EmbeddingBackbone.load(config.embedding_model, device, frozen_dtype(device), config.pooling,
                                               config.max_length, prompt_position=config.prompt_position)
        check_context(config.num_soft_tokens, self.backbone)
        config.pooling = self.backbone.pooling
        config.prompt_position = self.backbone.prompt_position
        config.instructions = list(dict.fromkeys(config.instructions))
        self.config = config
        self.normalize = config.normalize
        self.embedding_dim = self.backbone.hidden_size
        ids = self.backbone.tokenizer(INIT_TEXT, add_special_tokens=False)["input_ids"] or [0]
        ids = (ids * config.num_soft_tokens)[: config.num_soft_tokens]
        with torch.no_grad():  # every row starts as prompt tuning's static prompt does
            init = self.backbone.model.get_input_embeddings()(torch.tensor(ids, device=device)).float()
        self.prompts = nn.ParameterList([nn.Parameter(init.clone()) for _ in config.instructions])
        self.row = {text: i for i, text in enumerate(config.instructions)}
        self._keys: torch.Tensor | None = None  # E's embeddings of the named training instructions
        self._fallback: dict[str, int] = {}
        self.eval()

    def train(self, mode: bool = True) -> PromptTableEmbedder:
        super().train(mode)
        self.backbone.model.eval()
        return self

    @torch.no_grad()
    def _embed_instructions(self, texts: list[str]) -> torch.Tensor:
        template = PROMPTEOL_TEMPLATE if is_decoder(self.backbone.model) else "{text}"
        return self.backbone([template.replace("{text}", t) for t in texts], None, normalize=True).float()

    def nearest(self, instruction: str) -> int:
        """The row of `instruction`, or of the training instruction nearest to it by E's embedding."""
        if instruction in self.row:
            return self.row[instruction]
        if instruction not in self._fallback:
            named = [t for t in self.config.instructions if t.strip()]
            if not named:
                raise ValueError("the table has no named training instruction to fall back to")
            if self._keys is None:
                self._keys = self._embed_instructions(named)
            similarity = self._keys @ self._embed_instructions([instruction])[0]
            self._fallback[instruction] = self.row[named[int(similarity.argmax())]]
        return self._fallback[instruction]

    def prompt_for(self, instruction: str | None) -> torch.Tensor:
        """The (K, d) prompt an instruction gets; None (or an empty instruction not in the table): the mean row."""
        key = "" if instruction is None else instruction
        if key in self.row:
            return self.prompts[self.row[key]]
        if not key.strip():
            return torch.stack(list(self.prompts)).mean(0)
        return self.prompts[self.nearest(key)]

    def embed(self, texts: list[str], instruction: str | None = None, prompt_type: str = "query",
              normalize: bool = True) -> torch.Tensor:
        if not self.uses_prompt(prompt_type):
            return self.backbone(texts, None, normalize=normalize)
        return self.backbone(texts, self.prompt_for(instruction), normalize=normalize)

    @property
    def document_side_trainable(self) -> bool:
        return self.config.prompt_on == "both"

    def save_pretrained(self, directory: str | Path) -> None:
        save_prompts(self, directory, {"prompts": torch.stack([p.detach() for p in self.prompts])})

    @classmethod
    def load(cls, directory: Path, config: BaselineConfig, device=None) -> PromptTableEmbedder:
        model = cls(config, device)
        saved = read_safetensors(directory / PROMPT_FILE)[0]
        if "prompts" not in saved or saved["prompts"].shape[0] != len(model.prompts):
            raise ValueError(f"{directory / PROMPT_FILE}: expected 'prompts' with one row per instruction of "
                             f"{directory / BASELINE_CONFIG} ({len(model.prompts)}): save the model again")
        for row, value in zip(model.prompts, saved["prompts"], strict=True):
            row.data.copy_(value)
        return model.eval()
