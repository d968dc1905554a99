"""The dev evaluation the loop runs when asked (`control.should_evaluate`), and the bookkeeping that follows it:
the best score, the target, the stop."""

from __future__ import annotations

from ..data.datasets import STS_INSTRUCTION, load_sts
from ..models.embedder import Embedder
from .config import TrainingConfig
from .dev_selection import DEFAULT_EVAL_TASK, dev_metric, dev_score, sample_dev
from .state import TrainerControl, TrainerState


class DevEvaluation:
    """The dev score during training: STS-B dev Spearman x100 on a seeded sample (`eval_max_pairs`), or `eval_task`'s
    dev main score; and what follows from it: the best score (for `best/`), the first step and time at which it
    reaches `target_score`, and the stop there with `stop_at_target`. A score met at step 0 took no training: 0 s."""

    def __init__(self, config: TrainingConfig):
        self.config = config
        sts_dev = config.do_eval and config.eval_task == DEFAULT_EVAL_TASK
        self.dev_pairs = sample_dev(load_sts("dev"), config.eval_max_pairs) if sts_dev else []
        self.metric = dev_metric(config.eval_task) if config.do_eval else None

    def evaluate(self, model: Embedder) -> float:
        """encode switches to eval mode and back to train mode itself; test splits stay untouched."""
        from ..evaluation import evaluate_pairs  # here: scipy is needed only to evaluate

        if self.config.eval_task != DEFAULT_EVAL_TASK:
            return dev_score(model, self.config.eval_task)
        scores = evaluate_pairs(model, self.dev_pairs, STS_INSTRUCTION, batch_size=64, show_progress_bar=False)
        return scores["spearman"]

    def record(self, score: float, state: TrainerState, control: TrainerControl, elapsed: float) -> bool:
        """Put `score` into the state (and the log row); True when it is the best so far."""
        state.dev_score = score
        state.log_row["dev_score"] = f"{score:.3f}"
        improved = state.best_metric is None or score > state.best_metric
        if improved:
            state.best_metric = score
        target = self.config.target_score
        if target is not None and state.steps_to_target is None and score >= target:
            state.steps_to_target = state.global_step
            state.seconds_to_target = elapsed if state.global_step else 0.0
        if self.config.stop_at_target and state.steps_to_target is not None:
            control.should_training_stop = True
        return improved
