"""Classification as MTEB scores it: a logistic-regression probe on frozen embeddings of a few samples per label.

MTEB (``AbsTaskClassification._undersample_data``, mteb 2.26) draws each experiment's training set by shuffling the
index list with a *fresh* ``np.random.RandomState(seed)``, i.e. it applies the same permutation again to the
previous experiment's order, then takes the first ``samples_per_label`` texts of each label. ``sampling="stream"``
instead carries one generator through all experiments (each shuffle draws new numbers): for all-MiniLM-L6-v2 on
Banking77 that gives 79.66 against MTEB's 80.04 (docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from ..data.task_sets import LabelledTexts
from ..models.embedder import Embedder
from .encoding import encode_texts

SAMPLINGS = ("mteb", "stream")


@dataclass(frozen=True)
class ClassificationData:
    """The probe's training pool and the texts it is scored on."""

    train: LabelledTexts
    test: LabelledTexts


def undersample(labels: Sequence[str], n_experiments: int = 10, samples_per_label: int = 8, seed: int = 42,
                sampling: str = "mteb") -> list[list[int]]:
    """Training indices of each experiment, drawn as MTEB does (see the module doc for the two samplings)."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    order: list[int] | np.ndarray = list(range(len(labels))) if sampling == "mteb" else np.arange(len(labels))
    stream = np.random.RandomState(seed)
    draws = []
    for _ in range(n_experiments):
        rng = np.random.RandomState(seed) if sampling == "mteb" else stream
        rng.shuffle(order)
        counts: dict[str, int] = {}
        chosen = []
        for i in order:
            if counts.get(labels[i], 0) < samples_per_label:
                chosen.append(int(i))
                counts[labels[i]] = counts.get(labels[i], 0) + 1
        draws.append(chosen)
    return draws


def probe_scores(train_embeddings: np.ndarray, train_labels: Sequence[str], test_embeddings: np.ndarray,
                 test_labels: Sequence[str], draws: Sequence[Sequence[int]], seed: int = 42) -> dict[str, float]:
    """Mean accuracy and macro F1 (x100) of LogisticRegression(max_iter=100, random_state=seed) over the draws.

    ``train_embeddings`` is indexed by the pool positions in ``draws``.
    """
    train_labels = np.asarray(train_labels)
    accuracies, f1s = [], []
    for chosen in draws:
        probe = LogisticRegression(max_iter=100, random_state=seed)
        probe.fit(train_embeddings[chosen], train_labels[chosen])
        predicted = probe.predict(test_embeddings)
        accuracies.append(accuracy_score(test_labels, predicted))
        f1s.append(f1_score(test_labels, predicted, average="macro"))
    accuracy = 100 * float(np.mean(accuracies))
    return {"main_score": accuracy, "accuracy": accuracy, "f1": 100 * float(np.mean(f1s))}


def evaluate_classification(model: Embedder, data: ClassificationData, instruction: str | None, batch_size: int = 64,
                            show_progress_bar: bool | None = None, n_experiments: int = 10,
                            samples_per_label: int = 8, seed: int = 42, sampling: str = "mteb"
                            ) -> dict[str, float]:
    """Only the pool texts some experiment draws are embedded (as MTEB 2.x does), then the probe runs per draw."""
    draws = undersample(data.train.labels, n_experiments, samples_per_label, seed, sampling)
    used = sorted(set().union(*draws))
    position = {index: i for i, index in enumerate(used)}
    train = encode_texts(model, [data.train.texts[i] for i in used], instruction, "query", batch_size,
                         show_progress_bar)
    test = encode_texts(model, data.test.texts, instruction, "query", batch_size, show_progress_bar)
    labels = [data.train.labels[i] for i in used]
    local = [[position[i] for i in chosen] for chosen in draws]
    return {**probe_scores(train, labels, test, data.test.labels, local, seed), "num_test": len(data.test.texts),
            "samples_per_label": samples_per_label, "n_experiments": n_experiments, "sampling": sampling}
