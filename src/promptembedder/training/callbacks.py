"""The built-in callbacks: the CSV log, TensorBoard and the progress bar (dev evaluation and checkpoints are the
loop's own work, asked for through `TrainerControl`). Each gets `(args, state, control, **kwargs)` as transformers'
callbacks do, never the trainer; `step_flags` is what the loop asks for after each step unless a callback changes it."""

from __future__ import annotations

import csv
import inspect
import warnings
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from .config import TrainingConfig
from .run_folder import truncate_log
from .state import TrainerCallback, TrainerControl, TrainerState

#: `dev_score` is `eval_task`'s dev main score x100 (its name is the run's `dev_metric`, e.g. "scifact ndcg_at_10").
LOG_FIELDS = ["step", "epoch", "loss", "lr", "tau", "examples_per_s", "step_time_s", "elapsed_s", "dev_score"]
#: Columns that earlier versions wrote under another name (a run resumed from then keeps its logged values).
RENAMED_FIELDS = {"dev_spearman": "dev_score"}
HOOKS = ("on_train_begin", "on_step_end", "on_evaluate", "on_log", "on_train_end")
#: The keyword arguments every hook receives (`Trainer.hook_arguments`).
HOOK_KEYWORDS = frozenset({"model", "optimizer", "lr_scheduler"})


def step_flags(args: TrainingConfig, state: TrainerState, control: TrainerControl) -> None:
    """After each step: evaluate every `eval_steps` and at the end, checkpoint every `save_steps`, log every
    `logging_steps` (and at every evaluation: the loop sets should_log when it evaluates)."""
    step = state.global_step
    control.should_evaluate = args.do_eval and (step % args.eval_steps == 0 or step == args.max_steps)
    control.should_save = step % args.save_steps == 0
    control.should_log = step % args.logging_steps == 0


class CSVLogger(TrainerCallback):
    """output_dir/log.csv, one row per logged step; on resume the rows past the checkpoint are dropped first."""

    def on_train_begin(self, args: TrainingConfig, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        path = Path(args.output_dir) / "log.csv"
        fresh = state.global_step == 0 or not path.exists()
        if not fresh:
            truncate_log(path, state.global_step, LOG_FIELDS, RENAMED_FIELDS)
        self.file = open(path, "w" if fresh else "a", newline="")  # noqa: SIM115
        self.writer = csv.DictWriter(self.file, LOG_FIELDS)
        if fresh:
            self.writer.writeheader()

    def on_log(self, args: TrainingConfig, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self.writer.writerow(state.log_row)
        self.file.flush()

    def on_train_end(self, args: TrainingConfig, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self.file.close()


class TensorBoardLogger(TrainerCallback):
    """The loss and dev score under output_dir/tensorboard, where TensorBoard is installed."""

    def on_train_begin(self, args: TrainingConfig, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer = None
            return
        self.writer = SummaryWriter(str(Path(args.output_dir) / "tensorboard"))

    def on_log(self, args: TrainingConfig, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        if self.writer is None:
            return
        if state.global_step:  # step 0 (`eval_on_start`) has a dev score and no loss yet
            self.writer.add_scalar("loss", state.loss, state.global_step)
        if state.log_row.get("dev_score"):
            self.writer.add_scalar(f"dev/{state.dev_metric}", state.dev_score, state.global_step)

    def on_train_end(self, args: TrainingConfig, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressBar(TrainerCallback):
    """A tqdm bar on rank 0 with the loss, examples/s and the last dev score."""

    def on_train_begin(self, args: TrainingConfig, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self.bar = tqdm(total=args.max_steps, initial=state.global_step, desc=f"train {args.method}",
                        disable=not (state.is_world_process_zero and args.show_progress_bar))

    def on_step_end(self, args: TrainingConfig, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        row = state.log_row
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{state.loss:.3f}", ex_s=row["examples_per_s"], dev=row["dev_score"] or "-")

    def on_train_end(self, args: TrainingConfig, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self.bar.close()


class StepEndFunction(TrainerCallback):
    """A plain function `f(args, state, control, **kwargs)` as a callback: it runs at the end of every step."""

    def __init__(self, function: Callable):
        self.function = function
        try:
            parameters = inspect.signature(function).parameters.values()
        except ValueError:  # no signature to read (a builtin): it gets what it can take positionally
            parameters = []
        self.keywords = {p.name for p in parameters if p.kind is not p.VAR_POSITIONAL}
        self.any_keyword = any(p.kind is p.VAR_KEYWORD for p in parameters)

    def on_step_end(self, args: TrainingConfig, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self.function(args, state, control,
                      **{k: v for k, v in kwargs.items() if self.any_keyword or k in self.keywords})


def takes_state(function: Callable) -> bool:
    """Whether `function` can be called as f(args, state, control) (else: the old form f(trainer, step))."""
    try:
        signature = inspect.signature(function)
        signature.bind(None, None, None, **dict.fromkeys(HOOK_KEYWORDS & set(signature.parameters)))
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): assume the current form
        return True
    return True


def as_callback(callback: TrainerCallback | Callable, trainer: object) -> TrainerCallback:
    """A user's callback as the loop calls it; the old form f(trainer, step) still works, with a warning."""
    if any(hasattr(callback, hook) for hook in HOOKS):
        return callback
    if not callable(callback):
        raise TypeError(f"callbacks: {callback!r} is neither a TrainerCallback nor a function")
    if takes_state(callback):
        return StepEndFunction(callback)
    warnings.warn("callbacks of the form f(trainer, step) are deprecated and go in the next release: write "
                  "f(args, state, control, **kwargs) (state.global_step is the step; the model comes as "
                  "kwargs['model']), as transformers' callbacks do", FutureWarning, stacklevel=4)
    return StepEndFunction(lambda args, state, control: callback(trainer, state.global_step))


def call_hook(callbacks: list, hook: str, args: TrainingConfig, state: TrainerState, control: TrainerControl,
              **kwargs) -> None:
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(args, state, control, **kwargs)
