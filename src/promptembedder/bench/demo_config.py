"""The demo's settings (`DemoConfig`, `promptembedder demo --help`): models, budget, data, subsets."""

from __future__ import annotations

from dataclasses import dataclass, field

from .subsets import TASK_ORDER, InstructionSizes

#: The multi-task training data: one instruction per source and batch, equal weights.
SOURCES = ("esnli", "sts-train", "banking77-train", "mrpc-train")
#: What won the regime ablation (experiments/regime/LOG.md) for a decoder E: the prompt after the text, higher rates.
PROMPTEMBEDDER_SETTINGS = {"prompt_position": "suffix", "learning_rate": 1e-4, "alignment_learning_rate": 1e-2}
#: nli-follow and unseen tasks at the demo's sizes (module doc): about 800 texts per row.
DEMO_INSTRUCTION_SIZES = InstructionSizes(nli_items=50, licl_test=10, newsgroups_pool_per_label=6, newsgroups_test=60,
                                          n_experiments=1, samples_per_label=6, nli_wordings=("training",))
#: `--quick`'s: about 520 texts per row.
QUICK_INSTRUCTION_SIZES = InstructionSizes(nli_items=30, licl_test=8, newsgroups_pool_per_label=4, newsgroups_test=40,
                                           n_experiments=1, samples_per_label=4, nli_wordings=("training",))


@dataclass
class DemoConfig:
    output_dir: str = "runs/demo"
    prompting_model: str = "smollm2-135m"
    embedding_model: str = "gemma3-270m"
    transfer_model: str = "smollm2-135m"
    reference_model: str | None = "minilm-l6"
    steps: int = 20
    batch_size: int = 8
    max_length: int = 48
    transfer_steps: int = 10
    transfer_eval_steps: int = 5
    transfer_eval_pairs: int = 100
    tasks: tuple[str, ...] = TASK_ORDER
    transfer_tasks: tuple[str, ...] = ("sts-b",)
    train_data: tuple[str, ...] = SOURCES
    seed: int = 42
    device: str = "cpu"
    #: nli-follow and unseen tasks for every row but the transfer stage's; None leaves them out.
    instruction_sizes: InstructionSizes | None = DEMO_INSTRUCTION_SIZES
    promptembedder: dict = field(default_factory=lambda: dict(PROMPTEMBEDDER_SETTINGS))
    #: Only stage 3, on `transfer_model`, from the P that a finished demo in `output_dir` trained.
    transfer_only: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.instruction_sizes, dict):  # a config read back from JSON (demo_results.json)
            self.instruction_sizes = InstructionSizes(**self.instruction_sizes)

    @classmethod
    def preset(cls, quick: bool, **kwargs) -> DemoConfig:
        if quick:
            kwargs = {"steps": 8, "transfer_steps": 6, "transfer_eval_steps": 3, "tasks": ("sts-b", "banking77"),
                      "instruction_sizes": QUICK_INSTRUCTION_SIZES, **kwargs}
        return cls(**kwargs)
