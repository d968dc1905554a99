"""The settings of a training run: one dataclass that a YAML/JSON file and command-line flags both fill."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from ..data.files import load_examples
from ..data.sources import SOURCES, parse_task_weights
from ..models.config import PROMPT_POSITION_CHOICES, BaselineConfig, PromptEmbedderConfig
from ..settings import check_data_specs, check_device, check_positive, coerce_fields
from .dev_selection import check_eval_task

METHODS = ("promptembedder", "lora", "prompt-tuning", "prompt-table", "full")
FSDP_STRATEGIES = ("full_shard", "shard_grad_op")  # the names of transformers' and accelerate's FSDP options
DEFAULT_LR = {"promptembedder": 2e-5, "lora": 2e-4, "prompt-tuning": 3e-3, "prompt-table": 3e-3,
              "full": 2e-5}
#: W's learning rate when W alone trains (transfer to a new backbone): 1e-2 beat 1e-3 in the demo.
TRANSFER_ALIGNMENT_LR = 1e-2
#: The run's names for model settings named otherwise in a model config: the relaxation starts at tau_start.
RENAMED = {"tau": "tau_start"}
#: Model settings a run leaves at their defaults (a test checks every other one is a TrainingConfig field).
MODEL_ONLY = frozenset({"normalize", "train_prompting_embeddings", "default_instruction", "alignment_init", "adapter",
                        "template", "instructions"})
#: Baselines: how the method adapts E.
ADAPTER_OF = {"lora": "lora", "full": "full"}


@dataclass
class TrainingConfig:
    """Everything a run needs; a YAML/JSON file and command-line flags both fill this."""

    method: str = "promptembedder"
    # The model's settings (see `model_config`), with the model config's defaults.
    prompting_model: str = PromptEmbedderConfig.prompting_model
    embedding_model: str = PromptEmbedderConfig.embedding_model
    num_soft_tokens: int = PromptEmbedderConfig.num_soft_tokens
    pooling: str | None = PromptEmbedderConfig.pooling
    prompt_on: str = PromptEmbedderConfig.prompt_on
    prompt_position: str = PromptEmbedderConfig.prompt_position
    prompting_trainable: str = PromptEmbedderConfig.prompting_trainable
    lora_rank: int = PromptEmbedderConfig.lora_rank
    lora_alpha: int = PromptEmbedderConfig.lora_alpha
    hard: bool = PromptEmbedderConfig.hard
    gumbel_noise: bool = PromptEmbedderConfig.gumbel_noise
    tau_start: float = PromptEmbedderConfig.tau
    tau_end: float = PromptEmbedderConfig.tau
    train_alignment: bool = PromptEmbedderConfig.train_alignment
    train_data: list = field(default_factory=lambda: ["snli", "sts-train"])
    skip_invalid: bool = False
    output_dir: str = "runs/promptembedder"
    max_steps: int = 200
    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    learning_rate: float | None = None
    alignment_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    lr_scheduler: str = "linear"
    max_grad_norm: float = 1.0
    temperature: float = 0.05
    symmetric: bool = False
    #: Weight of a term that keeps P's prompts for different training instructions apart (the mean cosine of P's
    #: soft tokens, see training.losses): against P writing one prompt for all of them. 0 = off.
    prompt_diversity: float = 0.0
    seed: int = 42
    eval_steps: int = 50
    #: Also evaluate before the first update (transformers' name): a transferred start is scored, can be `best/`
    #: and can meet `target_score` at step 0 in zero seconds.
    eval_on_start: bool = False
    eval_max_pairs: int | None = None
    eval_task: str = "sts-b"
    task_weights: dict | None = None
    save_steps: int = 50
    logging_steps: int = 5
    max_length: int = 128  # tokens per text in training (the model config's 512 is for encoding)
    bf16: str = "auto"
    device: str | None = None
    gather_across_ranks: bool = True
    target_score: float | None = None
    stop_at_target: bool = False
    init_from: str | None = None
    resume: bool = False
    overwrite: bool = False
    show_progress_bar: bool = True
    do_eval: bool = True
    save_model: bool = True
    grad_cache_chunk_size: int | None = None
    fsdp: str | None = None
    gradient_checkpointing: bool = False
    #: With a suffix prompt on a causal E pooled at its last token, E reads the text once without a graph and only
    #: the K prompt positions with one (backbone.py): the same gradients, less time and memory. False: every
    #: position with a graph, for comparison.
    read_once: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.grad_cache_chunk_size is not None and self.grad_cache_chunk_size < 1:
            raise ValueError(f"grad_cache_chunk_size must be >= 1 or None, got {self.grad_cache_chunk_size}")
        if self.prompt_position not in PROMPT_POSITION_CHOICES:
            raise ValueError(f"prompt_position must be one of {PROMPT_POSITION_CHOICES}, got {self.prompt_position!r}")
        if self.prompt_position == "deep" and self.gradient_checkpointing:
            raise ValueError("gradient_checkpointing with prompt_position 'deep': recomputing a block would append "
                             "the text to the deep prompt's KV cache a second time; turn one of them off")
        if self.fsdp is not None and self.fsdp not in FSDP_STRATEGIES:
            raise ValueError(f"fsdp must be one of {FSDP_STRATEGIES} or None, got {self.fsdp!r}")
        if not self.train_alignment and (self.method != "promptembedder" or self.init_from):
            raise ValueError("train_alignment=False freezes PromptEmbedder's W while P trains: not for method "
                             f"{self.method!r}, nor for a transfer (init_from), where W is all that trains")
        if self.prompt_diversity < 0:
            raise ValueError(f"prompt_diversity must be >= 0, got {self.prompt_diversity}")
        if self.prompt_diversity and (self.method != "promptembedder" or self.init_from or not self.num_soft_tokens):
            raise ValueError("prompt_diversity keeps a trained P's prompts for different instructions apart: "
                             f"not for method {self.method!r}, a transfer (init_from: P is frozen) or 0 soft tokens")
        if self.fsdp and self.method != "promptembedder":
            raise ValueError(f"fsdp shards the prompting model P: method 'promptembedder' only, not {self.method!r}")
        self.eval_task = check_eval_task(self.eval_task)
        self.task_weights = parse_task_weights(self.task_weights)
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "eval_steps", "save_steps",
                     "logging_steps", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_positive(self, ("temperature", "tau_start", "tau_end", "learning_rate"))
        self.train_data = check_data_specs(self.train_data, (*SOURCES, "all"), load_examples)
        check_device(self.device)
        self.model_config  # noqa: B018 (validates the model's settings now, each error naming the setting)

    @property
    def model_config(self) -> PromptEmbedderConfig | BaselineConfig:
        """The method's model config: every field the run also has (by name, see `RENAMED`), the rest at their
        defaults. The model settings are declared in the model configs and taken from here, never copied by hand."""
        target = PromptEmbedderConfig if self.method == "promptembedder" else BaselineConfig
        known = {f.name for f in fields(self)}
        values = {f.name: getattr(self, RENAMED.get(f.name, f.name)) for f in fields(target)
                  if RENAMED.get(f.name, f.name) in known}
        if target is BaselineConfig:
            values["adapter"] = ADAPTER_OF.get(self.method, "none")
        return target(**values)

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LR[self.method]

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> TrainingConfig:
        """Read YAML or JSON; flags given on the command line (not None) override the file."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.MarkedYAMLError as err:  # one line, as compilers write it: file:line:column: what is wrong
            mark = err.problem_mark or err.context_mark
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            what = "; ".join(filter(None, (err.problem, err.context)))
            raise ValueError(f"{where}: YAML syntax error: {what}") from None
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"{path}: cannot read training config: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a training config must be a mapping of option: value")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown options {unknown}")
        data = coerce_fields(cls, data, str(path))
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


def tau_at(config: TrainingConfig, step: int) -> float:
    """Gumbel temperature: constant, or annealed geometrically from tau_start to tau_end over the run."""
    progress = min(step / max(config.max_steps - 1, 1), 1.0)
    return config.tau_start * (config.tau_end / config.tau_start) ** progress
