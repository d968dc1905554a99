"""Contrastive training for PromptEmbedder and its baselines under one loop, so comparisons are fair.

Same data, batches, loss, pooling, optimizer and schedule for every method; only what is trainable
differs. Checkpoints are atomic and hold optimizer, scheduler and RNG state, so a resumed run ends
with the same weights as an uninterrupted one. Works single-process or under torchrun / accelerate
launch, with DDP or with FSDP2 sharding P and W (`fsdp`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import random
import resource
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm
from transformers import get_scheduler

from . import distributed as dist_utils
from .baselines import BackboneEmbedder, BaselineConfig, PromptTuningEmbedder
from .checkpointing import enable_gradient_checkpointing
from .config import PROMPT_POSITION_CHOICES, PromptEmbedderConfig
from .data import (
    STS_INSTRUCTION,
    TrainExample,
    load_examples,
    load_sts,
)
from .embedder import Embedder
from .interrupts import catch_sigterm, deferred_interrupt, signal_of
from .loss import info_nce
from .model import PromptEmbedder, PromptHead
from .numerics import check_step, check_weights, json_safe
from .plotting import plot_training
from .resume import record
from .run_folder import RunFolder, open_run, truncate_log, write_folder
from .selection import DEFAULT_EVAL_TASK, check_eval_task, dev_score, sample_dev
from .serialization import read_safetensors, read_torch, tied_once
from .training_sources import SOURCES, load_training_data, parse_task_weights
from .validation import check_data_specs, check_device, check_positive, coerce_fields

METHODS = ("promptembedder", "lora", "prompt-tuning", "full")
FSDP_STRATEGIES = ("full_shard", "shard_grad_op")  # the names of transformers' and accelerate's FSDP options
DEFAULT_LR = {"promptembedder": 2e-5, "lora": 2e-4, "prompt-tuning": 3e-3, "full": 2e-5}
LOG_FIELDS = ["step", "epoch", "loss", "lr", "tau", "examples_per_s", "step_time_s", "elapsed_s", "dev_spearman"]


@dataclass
class TrainingConfig:
    """Everything a run needs; a YAML/JSON file and command-line flags both fill this."""

    method: str = "promptembedder"
    prompting_model: str = "gemma3-270m"
    embedding_model: str = "minilm-l6"
    num_soft_tokens: int = 5
    pooling: str | None = None
    prompt_on: str = "both"
    prompt_position: str = "prefix"
    prompting_trainable: str = "full"
    lora_rank: int = 8
    lora_alpha: int = 16
    hard: bool = False
    tau_start: float = 1.0
    tau_end: float = 1.0
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
    seed: int = 42
    eval_steps: int = 50
    eval_max_pairs: int | None = None
    eval_task: str = "sts-b"
    task_weights: dict | None = None
    save_steps: int = 50
    logging_steps: int = 5
    max_length: int = 128
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

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.grad_cache_chunk_size is not None and self.grad_cache_chunk_size < 1:
            raise ValueError(f"grad_cache_chunk_size must be >= 1 or None, got {self.grad_cache_chunk_size}")
        if self.prompt_position not in PROMPT_POSITION_CHOICES:
            raise ValueError(f"prompt_position must be one of {PROMPT_POSITION_CHOICES}, got {self.prompt_position!r}")
        if self.fsdp is not None and self.fsdp not in FSDP_STRATEGIES:
            raise ValueError(f"fsdp must be one of {FSDP_STRATEGIES} or None, got {self.fsdp!r}")
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


def make_batches(examples: list[TrainExample], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of example indices for one epoch, each from one instruction (one soft prompt per batch).

    Deterministic in (seed, epoch) so a resumed run sees the same batches; incomplete batches are
    dropped so every rank gets an equal share and in-batch negatives are never too few.
    """
    rng = random.Random(seed * 100_003 + epoch)
    groups: dict[str | None, list[int]] = {}
    for i, example in enumerate(examples):
        groups.setdefault(example.instruction, []).append(i)
    batches = []
    for indices in groups.values():
        indices = indices[:]
        rng.shuffle(indices)
        batches += [indices[i : i + batch_size] for i in range(0, len(indices) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    if not batches:
        raise ValueError(f"no data set has a full batch of {batch_size} examples: lower batch_size")
    return batches


def build_model(config: TrainingConfig, device: torch.device) -> Embedder:
    """The model a method trains, on a shared backbone reference, pooling and length limit."""
    if config.method == "promptembedder":
        if config.init_from:  # transfer: P from a trained checkpoint, frozen; a fresh W for the new E
            return PromptEmbedder.for_new_backbone(
                config.init_from, config.embedding_model, pooling=config.pooling, device=device
            )
        return PromptEmbedder(
            PromptEmbedderConfig(
                prompting_model=config.prompting_model,
                embedding_model=config.embedding_model,
                num_soft_tokens=config.num_soft_tokens,
                tau=config.tau_start,
                hard=config.hard,
                pooling=config.pooling,
                max_length=config.max_length,
                prompt_on=config.prompt_on,
                prompt_position=config.prompt_position,
                prompting_trainable=config.prompting_trainable,
                lora_rank=config.lora_rank,
                lora_alpha=config.lora_alpha,
            ),
            device=device,
        )
    baseline = BaselineConfig(
        method=config.method,
        embedding_model=config.embedding_model,
        pooling=config.pooling,
        max_length=config.max_length,
        prompt_on=config.prompt_on,
        lora_rank=config.lora_rank,
        lora_alpha=config.lora_alpha,
        num_soft_tokens=config.num_soft_tokens,
        prompt_position=config.prompt_position,
        adapter={"lora": "lora", "full": "full"}.get(config.method, "none"),
    )
    if config.method == "prompt-tuning":
        return PromptTuningEmbedder(baseline, device=device)
    return BackboneEmbedder(baseline, device=device)


def tau_at(config: TrainingConfig, step: int) -> float:
    """Gumbel temperature: constant, or annealed geometrically from tau_start to tau_end over the run."""
    progress = min(step / max(config.max_steps - 1, 1), 1.0)
    return config.tau_start * (config.tau_end / config.tau_start) ** progress


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated on GPU; peak resident set size of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class TrainResult:
    output_dir: str
    steps: int
    wall_time_s: float
    median_step_time_s: float
    examples_per_s: float
    peak_memory_mb: float
    trainable_parameters: int
    best_dev_spearman: float | None
    final_dev_spearman: float | None
    steps_to_target: int | None = None
    seconds_to_target: float | None = None
    interrupted: bool = False
    stop_signal: int | None = None  # SIGINT or SIGTERM when interrupted (the CLI exits 128 + it)


class Trainer:
    """One training loop for every method. `callbacks` are called as f(trainer, step) after each step."""

    def __init__(
        self,
        config: TrainingConfig,
        model: Embedder | None = None,
        examples: list[TrainExample] | None = None,
        callbacks: list[Callable] | None = None,
    ):
        self.config = config
        self.device = torch.device(config.device) if config.device else dist_utils.local_device()
        if self.device.type == "cuda" and self.device.index is None:  # "cuda": this process's GPU (LOCAL_RANK)
            self.device = torch.device("cuda", dist_utils.local_rank())
        self.distributed = dist_utils.init_from_env(self.device)
        self.is_main = dist_utils.is_main_process()
        self.output_dir = Path(config.output_dir)
        self.folder = RunFolder(self.output_dir)
        self.resume_changes = open_run(self.folder, config, self.is_main)
        if config.fsdp and not self.distributed:
            warnings.warn(f"fsdp={config.fsdp!r} is ignored: a single process has nothing to shard over; launch with "
                          "torchrun or accelerate launch", stacklevel=2)
        self.examples = examples if examples is not None else load_training_data(
            config.train_data, config.skip_invalid, embedding_model=config.embedding_model,
            task_weights=config.task_weights)
        self._seed(config.seed)
        self.model = model if model is not None else build_model(config, self.device)
        self.model.to(self.device)
        if config.gradient_checkpointing:  # E's activations are recomputed in backward (every method has a backbone)
            enable_gradient_checkpointing(self.model.backbone.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        self.prompted = isinstance(self.model, PromptEmbedder)  # P and W make a prompt; E is frozen
        # FSDP shards P and W in place (before the optimizer sees their parameters); a single process has no peers.
        self.sharded = self.distributed and config.fsdp is not None
        if self.sharded:
            dist_utils.fully_shard_modules([self.model.generator, self.model.alignment], self.device,
                                           reshard_after_forward=config.fsdp == "full_shard")
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = get_scheduler(
            config.lr_scheduler,
            self.optimizer,
            num_warmup_steps=int(config.warmup_ratio * config.max_steps),
            num_training_steps=config.max_steps,
        )
        # What a step calls: P and W (instruction -> prompt) for PromptEmbedder, the whole model for a baseline;
        # under DDP wrapped so their gradients are averaged over ranks (FSDP's hooks already do that).
        self.wrapped = PromptHead(self.model) if self.prompted else self.model
        if self.distributed and not self.sharded:
            self.wrapped = DistributedDataParallel(
                self.wrapped, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.callbacks = callbacks or []
        self.step = 0
        self.best_score: float | None = None
        self.doc_cache: dict[str, torch.Tensor] = {}
        self.autocast = (
            config.bf16 in ("auto", "true", True) and self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        )
        sts_dev = config.do_eval and config.eval_task == DEFAULT_EVAL_TASK
        self.dev_pairs = sample_dev(load_sts("dev"), config.eval_max_pairs) if sts_dev else []

    def _param_groups(self) -> list[dict]:
        """W learns faster than P: it is a small fresh matrix, P a pretrained LM."""
        model = self.model
        if isinstance(model, PromptEmbedder):
            align = [p for p in model.alignment.parameters() if p.requires_grad]
            other = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("alignment.")]
            groups = [{"params": align, "lr": self.config.alignment_learning_rate}]
            return groups + ([{"params": other}] if other else [])
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    @staticmethod
    def _seed(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    # --- checkpoints ---------------------------------------------------------------------------------
    def save_checkpoint(self, rng_state: dict) -> None:
        """Atomically replace output_dir/checkpoint: write a temp folder, then rename it into place.

        Every rank calls this: under FSDP the whole weights and optimizer state are gathered from all shards
        (torch.distributed.checkpoint's state-dict API), then rank 0 writes them.
        """
        if not (self.is_main or self.sharded):
            return
        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        trainable, optimizer = get_state_dict(self.model, self.optimizer, options=options)
        if not self.is_main:
            return
        check_weights(trainable.items(), "a checkpoint")
        tensors, aliases = tied_once(trainable)
        state = {"step": self.step, "optimizer": optimizer, "scheduler": self.scheduler.state_dict(), "rng": rng_state,
                 "best_score": self.best_score, "config": asdict(self.config)}

        def write(tmp: Path) -> None:
            save_file(tensors, tmp / "trainable.safetensors", metadata={"aliases": json.dumps(aliases)})
            torch.save(state, tmp / "trainer_state.pt")
            (tmp / "training_config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")

        write_folder(self.output_dir / "checkpoint", write, self.step)

    def load_checkpoint(self) -> dict | None:
        path = self.output_dir / "checkpoint"
        if not (path / "trainer_state.pt").exists():
            return None
        advice = "resume from an earlier copy, or start a new run with --overwrite"
        state = read_torch(path / "trainer_state.pt", advice)
        trained, metadata = read_safetensors(path / "trainable.safetensors", str(self.device), advice)
        aliases = json.loads(metadata.get("aliases", "{}"))
        trained.update({alias: trained[name] for alias, name in aliases.items()})
        expected = get_model_state_dict(self.model, options=StateDictOptions(ignore_frozen_params=True))
        missing = sorted(set(trained) ^ set(expected))
        if missing:
            raise ValueError(f"{path}: checkpoint does not match this model's trainable parameters: {missing[:5]}")
        # Every rank reads the whole state; under FSDP each keeps its own shard of it.
        set_state_dict(self.model, self.optimizer, model_state_dict=trained, optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True, strict=False))
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.best_score = state["step"], state["best_score"]
        return state["rng"]

    @staticmethod
    def _rng_state() -> dict:
        return {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    @staticmethod
    def _set_rng_state(state: dict) -> None:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if state["cuda"] is not None:
            torch.cuda.set_rng_state_all(state["cuda"])

    # --- one step --------------------------------------------------------------------------------------
    def _documents(self, texts: list[str], instruction: str | None) -> torch.Tensor:
        """Document embeddings without gradient (prompt_on=query), cached across epochs."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.doc_cache]
        if missing:
            with torch.no_grad():
                vectors = self.model.embed(missing, instruction, "document", normalize=True)
            self.doc_cache.update(zip(missing, vectors.detach(), strict=True))
        return torch.stack([self.doc_cache[t] for t in texts])

    def _loss(self, q: torch.Tensor, docs: torch.Tensor, num_positives: int) -> torch.Tensor:
        gather = dist_utils.gather_with_grad if self.distributed and self.config.gather_across_ranks else None
        # With a gather every rank must take part, even one whose slice of the batch has no hard negatives.
        has_negatives = docs.shape[0] > num_positives or gather is not None
        negatives = docs[num_positives:].float() if has_negatives else None
        return info_nce(q.float(), docs[:num_positives].float(), negatives, self.config.temperature,
                        self.config.symmetric, gather)

    def _micro_step(self, batch: list[TrainExample]) -> torch.Tensor:
        instruction = batch[0].instruction
        queries = [e.query for e in batch]
        documents = [e.positive for e in batch] + [n for e in batch for n in e.negatives]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            if self.prompted:
                prompt = self.wrapped(instruction)
                if self.model.document_side_trainable:  # prompt_on both: one E forward behind one prompt
                    everything = self.model.backbone(queries + documents, prompt)
                    q, docs = everything[: len(queries)], everything[len(queries) :]
                else:
                    docs = self._documents(documents, instruction)
                    q = self.model.backbone(queries, prompt)
            elif not self.model.document_side_trainable:
                docs = self._documents(documents, instruction)
                q = self.wrapped(queries, instruction, "query")
            elif self.model.config.prompt_on == "both":  # one pass: one soft prompt, one E forward
                everything = self.wrapped(queries + documents, instruction, "query")
                q, docs = everything[: len(queries)], everything[len(queries) :]
            else:
                q = self.wrapped(queries, instruction, "query")
                docs = self.model.embed(documents, instruction, "document")
        return self._loss(q, docs, len(batch))

    def _grad_cache_step(self, batch: list[TrainExample], scale: float) -> float:
        """GradCache (Gao et al. 2021): the loss of the whole batch with the memory of one chunk.

        Pass 1 embeds chunk by chunk without a graph; the loss's gradient w.r.t. each embedding is
        cached; pass 2 re-embeds each chunk with a graph (same RNG, so dropout repeats) and
        back-propagates the cached gradient. P generates the soft prompt once: its output is a leaf
        the chunks share, and its accumulated gradient goes back through P at the end.

        Under DDP, a baseline's chunks accumulate gradients locally (`no_sync`) and the last chunk's backward
        averages them over ranks, as in the GradCache library; PromptEmbedder's chunks only touch frozen E,
        so the final backward through P and W is the one DDP or FSDP synchronises.
        """
        model, size = self.model, self.config.grad_cache_chunk_size
        instruction = batch[0].instruction
        queries = [e.query for e in batch]
        documents = [e.positive for e in batch] + [n for e in batch for n in e.negatives]
        prompt = leaf = None
        if self.prompted:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                prompt = self.wrapped(instruction)
            leaf = prompt.detach().requires_grad_()

        def embed(texts: list[str], prompt_type: str) -> torch.Tensor:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                if leaf is None:
                    return self.wrapped(texts, instruction, prompt_type)
                use_prompt = prompt_type == "query" or model.config.prompt_on == "both"
                return model.backbone(texts, leaf if use_prompt else None)

        pieces = [(queries[i : i + size], "query") for i in range(0, len(queries), size)]
        cached_docs = not model.document_side_trainable
        if not cached_docs:
            pieces += [(documents[i : i + size], "document") for i in range(0, len(documents), size)]
        states, reps = [], []
        with torch.no_grad():
            for texts, prompt_type in pieces:
                states.append(self._rng_state())
                reps.append(embed(texts, prompt_type).detach().requires_grad_())
        q = torch.cat([r for r, (_, kind) in zip(reps, pieces, strict=True) if kind == "query"])
        docs = (self._documents(documents, instruction) if cached_docs else
                torch.cat([r for r, (_, kind) in zip(reps, pieces, strict=True) if kind == "document"]))
        loss = self._loss(q, docs, len(batch))
        (loss * scale).backward()
        for i, ((texts, prompt_type), state, rep) in enumerate(zip(pieces, states, reps, strict=True)):
            with self._gradient_sync(i == len(pieces) - 1), \
                    torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                self._set_rng_state(state)
                embed(texts, prompt_type).backward(rep.grad)
        if prompt is not None and leaf.grad is not None:
            prompt.backward(leaf.grad)
        return loss.item()

    def _gradient_sync(self, enabled: bool) -> contextlib.AbstractContextManager:
        """Whether a backward averages gradients over ranks: DDP skips it inside `no_sync`, to accumulate locally
        first; FSDP and a single process have no such switch here."""
        no_sync = getattr(self.wrapped, "no_sync", None)
        return contextlib.nullcontext() if enabled or no_sync is None else no_sync()

    def _save_pretrained(self, directory: Path) -> None:
        """`save_pretrained` on rank 0; every rank calls it, since under FSDP P and W are first gathered whole."""
        if not self.sharded:
            if self.is_main:
                check_weights(((n, p) for n, p in self.model.named_parameters() if p.requires_grad), str(directory))
                write_folder(directory, self.model.save_pretrained, self.step)
            return
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = {f"{name}.{key}": value for name in ("generator", "alignment")
                 for key, value in get_model_state_dict(getattr(self.model, name), options=options).items()}
        if self.is_main:
            check_weights(state.items(), str(directory))
            write_folder(directory, lambda tmp: self.model.save_pretrained(tmp, state_dict=state), self.step)

    def evaluate(self) -> float:
        """STS-B dev Spearman x100, or ``eval_task``'s dev main score (model selection; test stays untouched).
        encode switches to eval mode and back to train mode itself."""
        from .evaluation import evaluate_pairs  # here: scipy is needed only to evaluate

        if self.config.eval_task != DEFAULT_EVAL_TASK:
            return dev_score(self.model, self.config.eval_task)
        return evaluate_pairs(self.model, self.dev_pairs, STS_INSTRUCTION, batch_size=64, show_progress_bar=False)[
            "spearman"
        ]

    # --- the loop --------------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        """Run to max_steps (or the target); the output folder stays locked until the end."""
        try:
            return self._run()
        finally:
            self.folder.close()

    def _run(self) -> TrainResult:
        config = self.config
        world, rank = dist_utils.world_size(), dist_utils.rank()
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "training_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
        rng = self.load_checkpoint() if config.resume else None
        if rng is not None:
            self._set_rng_state(rng)
        if self.is_main:
            record(self.output_dir, self.step, self.resume_changes)
        log_path = self.output_dir / "log.csv"
        log_file = None
        if self.is_main:
            fresh = self.step == 0 or not log_path.exists()
            if not fresh:
                truncate_log(log_path, self.step, LOG_FIELDS)
            log_file = open(log_path, "w" if fresh else "a", newline="")  # noqa: SIM115
            writer = csv.DictWriter(log_file, LOG_FIELDS)
            if fresh:
                writer.writeheader()
        tb = self._tensorboard() if self.is_main else None
        global_batch = config.batch_size * world
        step_times: list[float] = []
        start = time.perf_counter()
        result_extra = {"steps_to_target": None, "seconds_to_target": None, "interrupted": False}
        last_dev = None
        bar = tqdm(
            total=config.max_steps,
            initial=self.step,
            desc=f"train {config.method}",
            disable=not (self.is_main and config.show_progress_bar),
        )
        self.model.train()
        epoch_batches: dict[int, list[list[int]]] = {}
        per_epoch = len(make_batches(self.examples, global_batch * config.gradient_accumulation_steps, config.seed, 0))
        restore_sigterm = catch_sigterm()  # a scheduler's SIGTERM stops the run as Ctrl-C does: checkpoint first
        try:
            while self.step < config.max_steps:
                step_rng, in_step = self._rng_state(), True
                t0 = time.perf_counter()
                epoch, position = divmod(self.step, per_epoch)
                if epoch not in epoch_batches:
                    epoch_batches = {
                        epoch: make_batches(
                            self.examples, global_batch * config.gradient_accumulation_steps, config.seed, epoch
                        )
                    }
                indices = epoch_batches[epoch][position]
                tau = tau_at(config, self.step)
                if self.prompted:
                    self.model.generator.tau = tau
                loss_sum = 0.0
                for micro in range(config.gradient_accumulation_steps):
                    chunk = indices[micro * global_batch : (micro + 1) * global_batch]
                    mine = chunk[rank * config.batch_size : (rank + 1) * config.batch_size]
                    scale = (world if gather_on(self) else 1) / config.gradient_accumulation_steps
                    examples = [self.examples[i] for i in mine]
                    # DDP averages gradients over ranks once per step, at the last micro-batch's backward.
                    with self._gradient_sync(micro == config.gradient_accumulation_steps - 1):
                        if config.grad_cache_chunk_size:
                            loss_value = self._grad_cache_step(examples, scale)
                        else:
                            loss = self._micro_step(examples)
                            (loss * scale).backward()
                            loss_value = loss.item()
                    loss_sum += loss_value / config.gradient_accumulation_steps
                grad_norm = torch.nn.utils.clip_grad_norm_(  # an infinite bound measures without clipping
                    [p for p in self.model.parameters() if p.requires_grad], config.max_grad_norm or float("inf")
                )
                check_step(loss_sum, grad_norm, self.step + 1)  # NaN/inf: stop before the update, weights intact
                with deferred_interrupt():  # a Ctrl-C here lands after the step is complete, never inside it
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.step += 1
                    in_step = False
                elapsed = time.perf_counter() - t0
                step_times.append(elapsed)
                row = {
                    "step": self.step,
                    "epoch": epoch,
                    "loss": f"{loss_sum:.5f}",
                    "lr": f"{self.scheduler.get_last_lr()[-1]:.3e}",
                    "tau": f"{tau:.4f}",
                    "examples_per_s": f"{len(indices) / elapsed:.2f}",
                    "step_time_s": f"{elapsed:.4f}",
                    "elapsed_s": f"{time.perf_counter() - start:.2f}",
                    "dev_spearman": "",
                }
                if config.do_eval and (self.step % config.eval_steps == 0 or self.step == config.max_steps):
                    # Under FSDP every rank takes part in P's forward, so every rank evaluates (to the same score).
                    last_dev = self.evaluate() if self.is_main or self.sharded else None
                    last_dev = dist_utils.broadcast_object(last_dev)
                    row["dev_spearman"] = f"{last_dev:.3f}"
                    if self.best_score is None or last_dev > self.best_score:
                        self.best_score = last_dev
                        self._save_pretrained(self.output_dir / "best")
                    if (
                        config.target_score is not None
                        and result_extra["steps_to_target"] is None
                        and last_dev >= config.target_score
                    ):
                        result_extra["steps_to_target"] = self.step
                        result_extra["seconds_to_target"] = time.perf_counter() - start
                if self.is_main and (self.step % config.logging_steps == 0 or row["dev_spearman"]):
                    writer.writerow(row)
                    log_file.flush()
                    if tb is not None:
                        tb.add_scalar("loss", loss_sum, self.step)
                        if row["dev_spearman"]:
                            tb.add_scalar("dev_spearman", last_dev, self.step)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum:.3f}", ex_s=row["examples_per_s"], dev=row["dev_spearman"] or "-")
                if self.step % config.save_steps == 0:
                    self.save_checkpoint(self._rng_state())
                for callback in self.callbacks:
                    callback(self, self.step)
                if config.stop_at_target and result_extra["steps_to_target"] is not None:
                    break
        except KeyboardInterrupt as err:
            # Save the state as of the last completed step (its RNG state included), then stop cleanly.
            self.optimizer.zero_grad(set_to_none=True)
            self.save_checkpoint(step_rng if in_step else self._rng_state())
            result_extra.update(interrupted=True, stop_signal=int(signal_of(err)))
        finally:
            restore_sigterm()
            bar.close()
            if log_file is not None:
                log_file.close()
            if tb is not None:
                tb.close()
        wall = time.perf_counter() - start
        if config.save_model and not result_extra["interrupted"]:
            self.save_checkpoint(self._rng_state())
            self._save_pretrained(self.output_dir / "final")
            if self.is_main:
                plot_training({config.method: log_path}, self.output_dir / "training_curves.png", title=config.method)
        median = statistics.median(step_times) if step_times else float("nan")
        result = TrainResult(
            output_dir=str(self.output_dir),
            steps=self.step,
            wall_time_s=wall,
            median_step_time_s=median,
            examples_per_s=global_batch * config.gradient_accumulation_steps / median if step_times else 0.0,
            peak_memory_mb=peak_memory_mb(self.device),
            trainable_parameters=sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            best_dev_spearman=self.best_score,
            final_dev_spearman=last_dev,
            **result_extra,
        )
        if self.is_main:
            summary = json.dumps(json_safe(asdict(result)), indent=2, allow_nan=False)
            (self.output_dir / "train_summary.json").write_text(summary + "\n")
        return result

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.output_dir / "tensorboard"))


def gather_on(trainer: Trainer) -> bool:
    """Whether the loss is the global one (gathered over ranks); DDP averages gradients, so scale by world size."""
    return trainer.distributed and trainer.config.gather_across_ranks


def train(config: TrainingConfig, **kwargs) -> TrainResult:
    return Trainer(config, **kwargs).train()
