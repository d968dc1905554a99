"""Model selection during training: an unbiased dev subset, or the dev split of another task.

STS-B dev is ordered by genre, and its first 1,000 pairs are all MSRvid video captions: a "first N pairs" subset
selected checkpoints that were good at captions only (a LoRA-on-Gemma run: dev 83.6, test 53.6). A subset is
therefore a seeded random sample, which spans the genres in proportion; the seed is fixed (not the run's seed) so
that runs with different seeds are selected on the same pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from ..data.task_sets import DEV_SEED
from ..models.embedder import Embedder

T = TypeVar("T")

#: The dev task by default; its "dev" split is STS-B dev.
DEFAULT_EVAL_TASK = "sts-b"


def sample_dev(pairs: Sequence[T], max_pairs: int | None, seed: int = DEV_SEED) -> list[T]:
    """`max_pairs` of `pairs` drawn without replacement with a fixed seed, kept in file order; all when None."""
    if max_pairs is None or max_pairs >= len(pairs):
        return list(pairs)
    if max_pairs < 2:
        raise ValueError(f"eval_max_pairs must be >= 2 (a correlation needs two pairs), got {max_pairs}")
    chosen = np.sort(np.random.RandomState(seed).choice(len(pairs), size=max_pairs, replace=False))
    return [pairs[i] for i in chosen]


def check_eval_task(name: str) -> str:
    """The registry name of a task that has a dev split, or an error naming those that do."""
    from ..evaluation.tasks import TASKS, get_task

    spec = get_task(name)
    if "dev" not in spec.splits:
        with_dev = [n for n, s in TASKS.items() if "dev" in s.splits]
        raise ValueError(f"eval_task {name!r} has no dev split to select checkpoints on (use one of {with_dev})")
    return spec.name


def dev_metric(task: str) -> str:
    """What the dev score of `task` is, for logs and model cards: e.g. "sts-b spearman", "scifact ndcg_at_10"."""
    from ..evaluation.tasks import get_task

    spec = get_task(task)
    return f"{spec.name} {spec.metric}"


def dev_score(model: Embedder, task: str) -> float:
    """Main score (x100) of `task`'s dev split, e.g. nDCG@10 on SciFact's held-out training claims."""
    from ..evaluation.runner import evaluate

    return evaluate(model, [task], split="dev", show_progress_bar=False)[task]["main_score"]
