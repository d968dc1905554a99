"""The configurations of PromptEmbedder and of its baselines: small, JSON-serialisable, in the style of peft's
configs, validated the same way."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..settings import check_types

CONFIG_NAME = "promptembedder_config.json"
BASELINE_CONFIG = "embedder_config.json"
POOLINGS = ("mean", "last", "cls")
PROMPT_ON = ("query", "both")
PROMPTING_TRAINABLE = ("full", "lora", "frozen")
INPUT_POSITIONS = ("prefix", "suffix", "both")  # where backbone.insert_prompt puts the prompt among the input tokens
PROMPT_POSITIONS = (*INPUT_POSITIONS, "deep")
PROMPT_POSITION_CHOICES = ("auto", *PROMPT_POSITIONS)
ADAPTERS = ("none", "lora", "full")


def check_settings(config, choices: tuple[tuple[str, tuple], ...]) -> None:
    """Lengths that must be positive and names that must be one of a few, each error naming the setting."""
    if config.num_soft_tokens < 0:
        raise ValueError(f"num_soft_tokens must be >= 0, got {config.num_soft_tokens}")
    if config.max_length < 1:
        raise ValueError(f"max_length must be >= 1 (tokens per text), got {config.max_length}")
    for name, allowed in ((("pooling", (None, *POOLINGS)), ("prompt_on", PROMPT_ON),
                           ("prompt_position", PROMPT_POSITION_CHOICES), *choices)):
        if getattr(config, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(config, name)!r}")


@dataclass
class PromptEmbedderConfig:
    """What to build: P, E (both as references), the soft prompt and pooling.

    `pooling=None` picks `mean` for encoders and `last` for decoders. `prompt_on="query"` means
    documents (the encode side without an instruction in asymmetric tasks) get no soft prompt.
    `prompt_position` places the soft prompt in E's input: `prefix` (after BOS/CLS), `suffix` (after the
    text, so last-token pooling reads it) or `both` (see backbone.py); `deep` makes it a prefix of every layer's
    keys and values in a decoder E (deep_prompt.py, an extension beyond the paper); `auto` is `suffix` for a decoder
    pooled at its last token and `prefix` otherwise, resolved (and saved) when E is loaded. `auto` is the
    default: with last-token pooling a causal decoder's pooled state sees a prefix only through the text, and the
    suffix won every measured comparison on Gemma (experiments/regime/LOG.md); encoders keep `prefix`. Export compiles
    `prefix` and `suffix` prompts (not `both` or `deep`). Configs saved before the field existed load as `prefix`,
    which is what they were trained with.

    `gumbel_noise=False` relaxes P's next-token distribution with the noiseless softmax in training too (the soft
    token is its expectation), as at inference: an untrained P's Gumbel draws differ from one another more than its
    prompts for different instructions do (experiments/instructions/README.md, part 7).

    `train_alignment=False` keeps W at its least-squares start while P trains, so that P alone carries the
    steering: a W trained on E absorbs most of it, and a transfer to a new E replaces W (experiments/regime/LOG.md).
    """

    prompting_model: str = "gemma3-270m"
    embedding_model: str = "minilm-l6"
    num_soft_tokens: int = 5
    tau: float = 1.0
    hard: bool = False
    gumbel_noise: bool = True
    pooling: str | None = None
    normalize: bool = True
    max_length: int = 512
    prompt_on: str = "both"
    prompt_position: str = "auto"
    prompting_trainable: str = "full"
    train_prompting_embeddings: bool = False
    lora_rank: int = 8
    lora_alpha: int = 16
    default_instruction: str = ""
    alignment_init: str = "auto"
    train_alignment: bool = True

    def instruction_text(self, instruction: str | None) -> str:
        """What P reads for `instruction`: the default instruction where none is given."""
        return self.default_instruction if instruction is None else instruction

    def __post_init__(self) -> None:
        check_types(self)
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.hard and not self.gumbel_noise:
            raise ValueError("hard=True without gumbel_noise makes every soft token an argmax one-hot, which passes "
                             "no gradient to P: keep the Gumbel noise, or set hard=False")
        if not self.train_alignment and self.alignment_init == "random":
            raise ValueError("train_alignment=False keeps W at its start, and alignment_init='random' makes that a "
                             "random map: use alignment_init 'auto' or 'lstsq', or train W")
        check_settings(self, (("prompting_trainable", PROMPTING_TRAINABLE),
                              ("alignment_init", ("auto", "lstsq", "random"))))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PromptEmbedderConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown PromptEmbedderConfig keys: {sorted(unknown)}")
        return cls(**data)

    def save(self, directory: str | Path) -> None:
        Path(directory, CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> PromptEmbedderConfig:
        path = Path(directory, CONFIG_NAME)
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: '{directory}' is not a saved PromptEmbedder")
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object of setting: value, got {type(data).__name__}")
            data.setdefault("prompt_position", "prefix")  # saved before prompt positions existed
            return cls.from_dict(data)
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: invalid PromptEmbedder config: {err}") from err


@dataclass
class BaselineConfig:
    """A baseline on E (see baselines.py): `adapter` LoRA, full fine-tuning or none (the instruction as text),
    or a learned static prompt of `num_soft_tokens` vectors (method `prompt-tuning`)."""

    method: str
    embedding_model: str
    pooling: str | None = None
    normalize: bool = True
    max_length: int = 512
    prompt_on: str = "both"
    adapter: str = "none"
    lora_rank: int = 8
    lora_alpha: int = 16
    num_soft_tokens: int = 5
    prompt_position: str = "auto"  # where prompt tuning's prompt goes: the rule of PromptEmbedderConfig's
    template: str | None = None
    #: prompt-table's training instructions, one learned prompt each ("" = no instruction); filled from the data.
    instructions: list[str] | None = None

    def __post_init__(self) -> None:
        check_types(self)
        if self.template is not None and "{text}" not in self.template:
            raise ValueError(f"template must contain '{{text}}' where the text goes, got {self.template!r}")
        check_settings(self, (("adapter", ADAPTERS),))

    def save(self, directory: Path) -> None:
        (directory / BASELINE_CONFIG).write_text(json.dumps(asdict(self), indent=2) + "\n")
