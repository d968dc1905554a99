"""What the loop shares with callbacks, as transformers' Trainer does: the run's state, which callbacks read, and a
control, which they set to ask for an evaluation, a checkpoint or a stop. A callback never receives the trainer:
`(args, state, control, **kwargs)`, with the model, optimizer and scheduler as keyword arguments."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainerState:
    """The run so far. `log_row` is the step's row of log.csv; `dev_score` the last dev evaluation (x100), whose
    name is `dev_metric` (e.g. "sts-b spearman"); `best_metric` the best one, kept in `best/`."""

    max_steps: int
    is_world_process_zero: bool = True
    global_step: int = 0
    epoch: int = 0
    loss: float = math.nan
    log_row: dict[str, Any] = field(default_factory=dict)
    dev_metric: str | None = None
    dev_score: float | None = None
    best_metric: float | None = None
    steps_to_target: int | None = None
    seconds_to_target: float | None = None
    start_time: float = 0.0


@dataclass
class TrainerControl:
    """Set by callbacks during a step; the loop acts on it after every callback has run, then clears it."""

    should_training_stop: bool = False
    should_evaluate: bool = False
    should_save: bool = False
    should_log: bool = False

    def new_step(self) -> None:
        self.should_evaluate = self.should_save = self.should_log = False


class TrainerCallback:
    """Hooks a callback may override, each called as f(args, state, control, **kwargs); kwargs hold `model`,
    `optimizer` and `lr_scheduler`. `on_evaluate` follows each dev evaluation (`state.dev_score`)."""

    def on_train_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        pass

    def on_step_end(self, args, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        pass

    def on_evaluate(self, args, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        pass

    def on_train_end(self, args, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        pass


@dataclass
class TrainResult:
    """What `Trainer.train` returns, and train_summary.json holds (with the instruction report and environment)."""

    output_dir: str
    steps: int
    wall_time_s: float
    median_step_time_s: float
    examples_per_s: float
    peak_memory_mb: float
    trainable_parameters: int
    best_dev_score: float | None
    final_dev_score: float | None
    dev_metric: str | None = None  # what the dev scores are, e.g. "sts-b spearman" or "scifact ndcg_at_10"
    steps_to_target: int | None = None
    seconds_to_target: float | None = None
    interrupted: bool = False
    stop_signal: int | None = None  # SIGINT or SIGTERM when interrupted (the CLI exits 128 + it)
