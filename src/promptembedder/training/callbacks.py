"""What happens after each step besides the update: evaluation (best model, target score), the CSV log,
TensorBoard and the progress bar. Each is a callback on the trainer's hook `f(trainer, step)`, run in order
before the user's; `on_train_begin` / `on_train_end`, where a callback has them, open and close its outputs."""

from __future__ import annotations

import csv
import time
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from ..data.datasets import STS_INSTRUCTION, load_sts
from . import distributed as dist_utils
from .dev_selection import DEFAULT_EVAL_TASK, dev_metric, dev_score, sample_dev
from .run_folder import truncate_log

if TYPE_CHECKING:
    from .trainer import Trainer

#: `dev_score` is `eval_task`'s dev main score x100 (its name is the run's `dev_metric`, e.g. "scifact ndcg_at_10").
LOG_FIELDS = ["step", "epoch", "loss", "lr", "tau", "examples_per_s", "step_time_s", "elapsed_s", "dev_score"]
#: Columns that earlier versions wrote under another name (a run resumed from then keeps its logged values).
RENAMED_FIELDS = {"dev_spearman": "dev_score"}


def logged(trainer: Trainer) -> bool:
    """Whether this step's row is written: every `logging_steps`, and at every evaluation."""
    return trainer.step % trainer.config.logging_steps == 0 or bool(trainer.row["dev_score"])


class DevEvaluation:
    """Every `eval_steps` (and at the end, and at step 0 with `eval_on_start`): the dev score, `best/` when it
    improves, and the first step and time at which it reaches `target_score` (where the run stops with
    `stop_at_target`). A score met at step 0 took no training, so its time is 0 s."""

    def __init__(self, trainer: Trainer):
        config = trainer.config
        sts_dev = config.do_eval and config.eval_task == DEFAULT_EVAL_TASK
        self.dev_pairs = sample_dev(load_sts("dev"), config.eval_max_pairs) if sts_dev else []
        self.metric = dev_metric(config.eval_task) if config.do_eval else None
        self.last: float | None = None
        self.steps_to_target: int | None = None
        self.seconds_to_target: float | None = None

    def evaluate(self, trainer: Trainer) -> float:
        """STS-B dev Spearman x100, or `eval_task`'s dev main score (model selection; test stays untouched).
        encode switches to eval mode and back to train mode itself."""
        from ..evaluation import evaluate_pairs  # here: scipy is needed only to evaluate

        if trainer.config.eval_task != DEFAULT_EVAL_TASK:
            return dev_score(trainer.model, trainer.config.eval_task)
        return evaluate_pairs(trainer.model, self.dev_pairs, STS_INSTRUCTION, batch_size=64,
                              show_progress_bar=False)["spearman"]

    def __call__(self, trainer: Trainer, step: int) -> None:
        config = trainer.config
        if not (config.do_eval and (step % config.eval_steps == 0 or step == config.max_steps)):
            return
        # Under FSDP every rank takes part in P's forward, so every rank evaluates (to the same score).
        score = self.evaluate(trainer) if trainer.is_main or trainer.sharded else None
        self.last = score = dist_utils.broadcast_object(score)
        trainer.row["dev_score"] = f"{score:.3f}"
        if trainer.best_score is None or score > trainer.best_score:
            trainer.best_score = score
            trainer.save_pretrained(trainer.output_dir / "best")
        if config.target_score is not None and self.steps_to_target is None and score >= config.target_score:
            self.steps_to_target = step
            self.seconds_to_target = time.perf_counter() - trainer.start_time if step else 0.0
        if config.stop_at_target and self.steps_to_target is not None:
            trainer.should_stop = True


class CSVLogger:
    """output_dir/log.csv, one row per logged step; on resume the rows past the checkpoint are dropped first."""

    def on_train_begin(self, trainer: Trainer) -> None:
        path = trainer.output_dir / "log.csv"
        fresh = trainer.step == 0 or not path.exists()
        if not fresh:
            truncate_log(path, trainer.step, LOG_FIELDS, RENAMED_FIELDS)
        self.file = open(path, "w" if fresh else "a", newline="")  # noqa: SIM115
        self.writer = csv.DictWriter(self.file, LOG_FIELDS)
        if fresh:
            self.writer.writeheader()

    def __call__(self, trainer: Trainer, step: int) -> None:
        if logged(trainer):
            self.writer.writerow(trainer.row)
            self.file.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        self.file.close()


class TensorBoardLogger:
    """The loss and dev score under output_dir/tensorboard, where TensorBoard is installed."""

    def on_train_begin(self, trainer: Trainer) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer = None
            return
        self.writer = SummaryWriter(str(trainer.output_dir / "tensorboard"))

    def __call__(self, trainer: Trainer, step: int) -> None:
        if self.writer is not None and logged(trainer):
            if step:  # step 0 (`eval_on_start`) has a dev score and no loss yet
                self.writer.add_scalar("loss", trainer.loss_value, step)
            if trainer.row["dev_score"]:
                self.writer.add_scalar(f"dev/{trainer.evaluation.metric}", trainer.evaluation.last, step)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressBar:
    """A tqdm bar on rank 0 with the loss, examples/s and the last dev score."""

    def on_train_begin(self, trainer: Trainer) -> None:
        config = trainer.config
        self.bar = tqdm(total=config.max_steps, initial=trainer.step, desc=f"train {config.method}",
                        disable=not (trainer.is_main and config.show_progress_bar))

    def __call__(self, trainer: Trainer, step: int) -> None:
        row = trainer.row
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{trainer.loss_value:.3f}", ex_s=row["examples_per_s"],
                             dev=row["dev_score"] or "-")

    def on_train_end(self, trainer: Trainer) -> None:
        self.bar.close()


class Checkpointing:
    """output_dir/checkpoint every `save_steps` (before the user's callbacks, which may stop the run)."""

    def __call__(self, trainer: Trainer, step: int) -> None:
        if step % trainer.config.save_steps == 0:
            trainer.save_checkpoint(trainer.rng_state())
