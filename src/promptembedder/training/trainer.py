"""One training loop for PromptEmbedder and its baselines, so comparisons are fair.

Same data, batches, loss, pooling, optimizer and schedule for every method; only what is trainable differs, and
the model says what that is (its training interface, `trainable.TrainableEmbedder`). Works single-process or
under torchrun / accelerate launch, with DDP or with FSDP2 sharding what the model lists (`fsdp`).
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import get_scheduler

from ..data.datasets import TrainExample
from ..data.sources import load_training_data
from ..environment import environment, peak_memory_mb
from ..models.trainable import TrainableEmbedder
from . import checkpoint
from . import distributed as dist_utils
from .batching import StepBatches, instructions_of
from .build import bare_embedder, build_model
from .callbacks import CSVLogger, ProgressBar, TensorBoardLogger, as_callback, call_hook, step_flags
from .config import TrainingConfig, tau_at
from .dev_evaluation import DevEvaluation
from .grad_cache import CachedContrastiveLoss
from .interrupts import catch_stop_signals, deferred_interrupt, raise_pending, signal_of
from .losses import ContrastiveLoss, DocumentCache, gradient_sync
from .numerics import check_step, json_safe
from .plotting import plot_training
from .resume import check_data, data_hashes, record
from .rng import rng_state, seed_everything, set_rng_state
from .run_folder import RunFolder, open_run
from .state import TrainerCallback, TrainerControl, TrainerState, TrainResult

#: The training instructions whose prompts train_summary.json reports (the first ones seen).
INSTRUCTIONS_REPORTED = 20
#: P's prompts this alike across every training instruction (cosine of its soft tokens) count as one prompt.
COLLAPSED_COSINE = 0.99


class Trainer:
    """Set-up and loop. `callbacks` are `TrainerCallback`s, or functions f(args, state, control, **kwargs) run at
    the end of each step, after the built-in ones (logs, progress bar); `state` is the run's `TrainerState`, and
    `control.should_training_stop` ends the run. After each step the loop evaluates, logs and checkpoints as
    `control` asks (`step_flags` sets it from the config; callbacks may change it)."""

    def __init__(
        self,
        config: TrainingConfig,
        model: TrainableEmbedder | None = None,
        examples: list[TrainExample] | None = None,
        callbacks: list[TrainerCallback | Callable] | None = None,
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
            task_weights=config.task_weights, negatives_model=lambda: bare_embedder(config.embedding_model))
        self.data_hashes = data_hashes(config.train_data, self.examples)  # saved with each checkpoint
        if config.resume:  # every rank: each would otherwise wait for the others
            try:
                check_data(self.output_dir / "checkpoint", self.data_hashes)
            except ValueError:
                self.folder.close()
                raise
        seed_everything(config.seed)
        self.model = model if model is not None else build_model(config, self.device, self.instructions)
        self.model.to(self.device)
        if config.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.model.set_read_once(config.read_once)
        if not any(p.requires_grad for p in self.model.parameters()):
            raise ValueError("the model has no trainable parameters")
        # FSDP shards in place (before the optimizer sees the parameters); a single process has no peers.
        self.sharded = self.distributed and config.fsdp is not None
        if self.sharded:
            dist_utils.fully_shard_modules(list(self.model.sharded_modules().values()), self.device,
                                           reshard_after_forward=config.fsdp == "full_shard")
        self.optimizer = torch.optim.AdamW(self.model.param_groups(config.alignment_learning_rate), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.scheduler = get_scheduler(config.lr_scheduler, self.optimizer,
                                       num_warmup_steps=int(config.warmup_ratio * config.max_steps),
                                       num_training_steps=config.max_steps)
        # What a step calls, under DDP wrapped so its gradients are averaged over ranks (FSDP's hooks do that).
        self.wrapped = self.model.training_module()
        if self.distributed and not self.sharded:
            self.wrapped = DistributedDataParallel(
                self.wrapped, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.autocast = (
            config.bf16 in ("auto", "true", True) and self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        )
        self.documents = DocumentCache(self.model)
        self.loss = self._make_loss()
        self.evaluation = DevEvaluation(config)
        self.state = TrainerState(max_steps=config.max_steps, is_world_process_zero=self.is_main,
                                  dev_metric=self.evaluation.metric, start_time=time.perf_counter())
        self.control = TrainerControl()
        self.loggers = [CSVLogger(), TensorBoardLogger()] if self.is_main else []
        self.callbacks = [*self.loggers, ProgressBar(), *(as_callback(c, self) for c in callbacks or [])]

    def _make_loss(self) -> ContrastiveLoss:
        """The loss the step back-propagates: GradCache's when chunks are asked for; global over ranks when
        gathered (DDP then averages gradients over ranks: the loss is scaled by the world size, see `_run`)."""
        config = self.config
        if config.prompt_diversity and len(self.instructions) < 2:
            raise ValueError(f"prompt_diversity keeps P's prompts for different instructions apart, but the training "
                             f"data has one instruction ({self.instructions[0]!r}): add a source with another one, "
                             "or set prompt_diversity to 0")
        gather = dist_utils.gather_with_grad if self.gathered else None
        parts = dict(model=self.model, module=self.wrapped, documents=self.documents, temperature=config.temperature,
                     symmetric=config.symmetric, gather=gather, autocast=self.autocast, device=self.device,
                     prompt_diversity=config.prompt_diversity, instructions=self.instructions)
        if config.grad_cache_chunk_size:
            return CachedContrastiveLoss(**parts, chunk_size=config.grad_cache_chunk_size)
        return ContrastiveLoss(**parts)

    @property
    def instructions(self) -> tuple[str | None, ...]:
        """The distinct training instructions (every wording of a task that has several), in the order first seen."""
        return instructions_of(self.examples)

    @property
    def gathered(self) -> bool:
        """Whether the loss is the global one (gathered over ranks)."""
        return self.distributed and self.config.gather_across_ranks

    def add_callback(self, callback: TrainerCallback | Callable) -> None:
        """One more callback, after those given to the constructor (transformers' `Trainer.add_callback`)."""
        self.callbacks.append(as_callback(callback, self))

    @property
    def hook_arguments(self) -> dict:
        """What every callback hook receives besides (args, state, control)."""
        return {"model": self.model, "optimizer": self.optimizer, "lr_scheduler": self.scheduler}

    # --- evaluation and saving ------------------------------------------------------------------------------
    def evaluate(self) -> float:
        """The dev score of the model as it is now (x100; what `best/` and the target are decided on)."""
        return self.evaluation.evaluate(self.model)

    @property
    def dev_pairs(self) -> list:
        return self.evaluation.dev_pairs

    def _evaluate(self) -> None:
        """A dev evaluation in the loop: the score into the state and log row, `best/` when it improves."""
        # Under FSDP every rank takes part in P's forward, so every rank evaluates (to the same score).
        score = self.evaluate() if self.is_main or self.sharded else None
        score = dist_utils.broadcast_object(score)
        if self.evaluation.record(score, self.state, self.control, time.perf_counter() - self.state.start_time):
            self.save_pretrained(self.output_dir / "best")
        self.control.should_log = True
        call_hook(self.callbacks, "on_evaluate", self.config, self.state, self.control, **self.hook_arguments)

    def save_checkpoint(self, rng: dict) -> None:
        checkpoint.save_checkpoint(self.output_dir / "checkpoint", self.model, self.optimizer, self.scheduler,
                                   self.state, self.config, self.data_hashes, rng, self.sharded)

    def load_checkpoint(self) -> dict | None:
        """Weights, optimizer and scheduler from output_dir/checkpoint, its step and best score into the state;
        returns its RNG state (None: no checkpoint)."""
        saved = checkpoint.load_checkpoint(self.output_dir / "checkpoint", self.model, self.optimizer, self.scheduler,
                                           self.device)
        if saved is None:
            return None
        self.state.global_step, self.state.best_metric = saved["step"], saved["best_score"]
        return saved["rng"]

    def save_pretrained(self, directory: Path) -> None:
        checkpoint.save_pretrained(directory, self.model, self.state.global_step, self.is_main, self.sharded)

    # --- the loop --------------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        """Run to max_steps (or the target); the output folder stays locked until the end."""
        try:
            return self._run()
        finally:
            self.folder.close()

    def _run(self) -> TrainResult:
        config = self.config
        world = dist_utils.world_size()
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "training_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
        rng = self.load_checkpoint() if config.resume else None
        if rng is not None:
            set_rng_state(rng)
        state, control, hook = self.state, self.control, self.hook_arguments
        if self.is_main:
            record(self.output_dir, state.global_step, self.resume_changes)
        step_times: list[float] = []
        state.start_time = start = time.perf_counter()
        interrupted = {"interrupted": False}
        batches = StepBatches(self.examples, config.batch_size, config.gradient_accumulation_steps, config.seed,
                              world, dist_utils.rank())
        call_hook(self.callbacks, "on_train_begin", config, state, control, **hook)
        self.model.train()
        restore_signals = catch_stop_signals()  # Ctrl-C or a scheduler's SIGTERM: checkpoint first, then stop
        in_step = False
        try:
            if config.do_eval and config.eval_on_start and state.global_step == 0:
                self._evaluate_at_start()
            while state.global_step < config.max_steps and not control.should_training_stop:
                raise_pending()
                step_rng, in_step = rng_state(), True
                t0 = time.perf_counter()
                epoch, size, micro_batches = batches(state.global_step)
                tau = tau_at(config, state.global_step)
                self.model.set_tau(tau)
                loss = self._update(micro_batches, (world if self.gathered else 1))
                with deferred_interrupt():  # a Ctrl-C here lands after the step is complete, never inside it
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    state.global_step += 1
                    in_step = False
                elapsed = time.perf_counter() - t0
                step_times.append(elapsed)
                state.epoch, state.loss = epoch, loss
                state.log_row = {"step": state.global_step, "epoch": epoch, "loss": f"{loss:.5f}",
                                 "lr": f"{self.scheduler.get_last_lr()[-1]:.3e}", "tau": f"{tau:.4f}",
                                 "examples_per_s": f"{size / elapsed:.2f}", "step_time_s": f"{elapsed:.4f}",
                                 "elapsed_s": f"{time.perf_counter() - start:.2f}", "dev_score": ""}
                self._step_end()
        except KeyboardInterrupt as err:
            # Save the state as of the last completed step (its RNG state included), then stop cleanly.
            self.optimizer.zero_grad(set_to_none=True)
            self.save_checkpoint(step_rng if in_step else rng_state())
            interrupted = {"interrupted": True, "stop_signal": int(signal_of(err))}
        finally:
            restore_signals()
            call_hook(self.callbacks, "on_train_end", config, state, control, **hook)
        return self._finish(time.perf_counter() - start, step_times, world, interrupted)

    def _step_end(self) -> None:
        """What follows an update, in order: the dev evaluation, the log row (so a row is never lost to a later
        callback), the callbacks' `on_step_end` (which may ask for a checkpoint or a stop), the checkpoint."""
        config, state, control = self.config, self.state, self.control
        control.new_step()
        step_flags(config, state, control)
        if control.should_evaluate:
            self._evaluate()
        if control.should_log:
            call_hook(self.callbacks, "on_log", config, state, control, **self.hook_arguments)
        call_hook(self.callbacks, "on_step_end", config, state, control, **self.hook_arguments)
        if control.should_save:
            self.save_checkpoint(rng_state())

    def _evaluate_at_start(self) -> None:
        """`eval_on_start`: step 0's dev score, logged and eligible for `best/` and the target (a start that is
        already good, e.g. a transferred P, is kept rather than lost to worse training steps)."""
        tau = tau_at(self.config, 0)
        self.model.set_tau(tau)
        self.state.log_row = {"step": 0, "epoch": 0, "loss": "", "lr": f"{self.scheduler.get_last_lr()[-1]:.3e}",
                              "tau": f"{tau:.4f}", "examples_per_s": "", "step_time_s": "", "elapsed_s": "0.00",
                              "dev_score": ""}
        self._evaluate()
        call_hook(self.loggers, "on_log", self.config, self.state, self.control, **self.hook_arguments)

    def _update(self, micro_batches: list[list[TrainExample]], world_scale: int) -> float:
        """Gradients of the step's micro-batches, checked and clipped; returns the mean loss."""
        config = self.config
        loss_sum = 0.0
        for micro, examples in enumerate(micro_batches):
            # DDP averages gradients over ranks once per step, at the last micro-batch's backward.
            with gradient_sync(self.wrapped, micro == len(micro_batches) - 1):
                loss = self.loss(examples)
                (loss * (world_scale / config.gradient_accumulation_steps)).backward()
            loss_sum += loss.item() / config.gradient_accumulation_steps
        grad_norm = torch.nn.utils.clip_grad_norm_(  # an infinite bound measures without clipping
            [p for p in self.model.parameters() if p.requires_grad], config.max_grad_norm or float("inf")
        )
        check_step(loss_sum, grad_norm, self.state.global_step + 1)  # NaN/inf: stop before the update, weights intact
        return loss_sum

    def _finish(self, wall: float, step_times: list[float], world: int, interrupted: dict) -> TrainResult:
        """The final checkpoint, model and plot (unless interrupted), and the run's summary."""
        config = self.config
        if config.save_model and not interrupted["interrupted"]:
            self.save_checkpoint(rng_state())
            self.save_pretrained(self.output_dir / "final")
            if self.is_main:
                plot_training({config.method: self.output_dir / "log.csv"}, self.output_dir / "training_curves.png",
                              title=config.method)
        median = statistics.median(step_times) if step_times else float("nan")
        global_batch = config.batch_size * world * config.gradient_accumulation_steps
        result = TrainResult(
            output_dir=str(self.output_dir),
            steps=self.state.global_step,
            wall_time_s=wall,
            median_step_time_s=median,
            examples_per_s=global_batch / median if step_times else 0.0,
            peak_memory_mb=peak_memory_mb(self.device),
            trainable_parameters=sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            best_dev_score=self.state.best_metric,
            final_dev_score=self.state.dev_score,
            dev_metric=self.state.dev_metric,
            steps_to_target=self.state.steps_to_target,
            seconds_to_target=self.state.seconds_to_target,
            **interrupted,
        )
        if self.is_main:
            instructions = list(self.instructions[:INSTRUCTIONS_REPORTED])
            report = {} if self.sharded else self.model.instruction_report(instructions)
            warn_if_collapsed(report)
            summary = json.dumps(json_safe({**asdict(result), "instructions": report,
                                            "environment": environment(self.device)}), indent=2, allow_nan=False)
            (self.output_dir / "train_summary.json").write_text(summary + "\n")
        return result


def warn_if_collapsed(report: dict) -> None:
    """P writing one prompt for every instruction makes PromptEmbedder a static prompt: say so, it is silent."""
    cosine = report.get("prompt_cosine")
    if cosine and cosine["min"] >= COLLAPSED_COSINE:
        warnings.warn(f"P writes the same prompt for all {len(report['prompts'])} training instructions (soft-token "
                      f"cosine >= {cosine['min']:.3f}): the instruction no longer steers E, so the model acts as one "
                      "static prompt. A lower P learning rate or prompt_diversity kept them apart "
                      "(experiments/regime/LOG.md)",
                      UserWarning, stacklevel=2)


def train(config: TrainingConfig, **kwargs) -> TrainResult:
    return Trainer(config, **kwargs).train()
