"""MTEB's own task classes fed with the shared data, so `mteb.evaluate` scores our tasks with no network.

Each registry task maps to the MTEB task whose scoring it follows (MRPC has no MTEB task: it runs as a
pair-classification task, SprintDuplicateQuestions' class). Running a model through these and through
`promptembedder.evaluation` must give the same numbers: that pins our scoring to MTEB's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..models.embedder import Embedder
from .mteb_model import MTEBModel, _require_mteb
from .tasks import TASKS, get_task

__all__ = ["MTEB_BASE_TASKS", "evaluate_with_mteb", "local_task"]

#: Our task -> the MTEB task class whose scoring (and, but for MRPC, whose data) it shares.
MTEB_BASE_TASKS = {
    "sts-b": "STSBenchmark",
    "sick-r": "SICK-R",
    "scifact": "SciFact",
    "banking77": "Banking77Classification",
    "mrpc": "SprintDuplicateQuestions",
    "twentynewsgroups": "TwentyNewsgroupsClustering",
}


def _label_ids(labels: list[str]) -> tuple[list[int], dict[str, int]]:
    """Integer labels in sorted-name order (the order scikit-learn gives classes), as MTEB's data sets hold them."""
    ids = {name: i for i, name in enumerate(sorted(set(labels)))}
    return [ids[label] for label in labels], ids


def _dataset(spec_type: str, data: Any) -> Any:
    """Our loaded data in the layout the MTEB task class of `spec_type` reads."""
    from datasets import Dataset, DatasetDict

    if spec_type == "sts":
        return DatasetDict({"test": Dataset.from_dict({
            "sentence1": [p.sentence1 for p in data], "sentence2": [p.sentence2 for p in data],
            "score": [p.score for p in data]})})
    if spec_type == "pair_classification":
        return DatasetDict({"test": Dataset.from_dict({
            "sentence1": [p.sentence1 for p in data], "sentence2": [p.sentence2 for p in data],
            "labels": [p.label for p in data]})})
    if spec_type == "classification":
        train, ids = _label_ids(data.train.labels)
        test = [ids[label] for label in data.test.labels]
        return DatasetDict({"train": Dataset.from_dict({"text": data.train.texts, "label": train}),
                            "test": Dataset.from_dict({"text": data.test.texts, "label": test})})
    if spec_type == "clustering":  # one set holding every text, as `evaluation.clustering` scores it
        return DatasetDict({"test": Dataset.from_dict({"sentences": [data.texts],
                                                       "labels": [_label_ids(data.labels)[0]]})})
    if spec_type == "retrieval":
        queries = Dataset.from_dict({"id": list(data.queries), "text": list(data.queries.values())})
        corpus = Dataset.from_dict({"id": list(data.corpus), "text": list(data.corpus.values()),
                                    "title": [""] * len(data.corpus)})
        return {"default": {"test": {"queries": queries, "corpus": corpus,
                                     "relevant_docs": {q: dict(d) for q, d in data.qrels.items()},
                                     "top_ranked": None}}}
    raise ValueError(f"no MTEB layout for task type {spec_type!r}")


def local_task(task: str) -> Any:
    """The MTEB task object for one of our tasks, its test data read from the shared folder (no Hub access)."""
    mteb = _require_mteb()
    spec = get_task(task)
    if spec.name not in MTEB_BASE_TASKS:
        raise ValueError(f"task {spec.name!r} has no MTEB counterpart (known: {', '.join(MTEB_BASE_TASKS)})")
    base = type(mteb.get_task(MTEB_BASE_TASKS[spec.name]))

    def load_data(self: Any, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = _dataset(spec.type, spec.load("test"))
        self.data_loaded = True

    return type(f"Local{base.__name__}", (base,), {"load_data": load_data, "__module__": __name__})()


def evaluate_with_mteb(embedder: Embedder, tasks: Iterable[str], instructions: Mapping[str, str | None] | None = None,
                       batch_size: int = 64) -> dict[str, float]:
    """Main score (x100) of each task as `mteb.evaluate` computes it, with our default instructions.

    Nothing is cached or written: every call encodes afresh, so a result can never come from an older run.
    """
    mteb = _require_mteb()
    names = [get_task(t).name for t in tasks]
    overrides = {**{n: TASKS[n].instruction for n in names}, **(instructions or {})}
    model = MTEBModel(embedder, batch_size=batch_size,
                      task_instructions={MTEB_BASE_TASKS[n]: overrides[n] for n in names})
    objects = [local_task(n) for n in names]
    results = mteb.evaluate(model, objects, cache=None, overwrite_strategy="always", show_progress_bar=False,
                            encode_kwargs={"batch_size": batch_size})
    scores = {}
    for result in results.task_results:
        name = next(n for n in names if MTEB_BASE_TASKS[n] == result.task_name)
        scores[name] = 100 * float(result.get_score())
    return scores


def local_sts_task(task: str = "sts-b") -> Any:
    """MTEB's own STS task (`STSBenchmark` or `SICK-R`) with its test data read from the shared folder.

    It runs through `mteb.evaluate` with no network; `local_task` does the same for every
    registered task type.
    """
    spec = get_task(task)
    if spec.type != "sts":
        raise ValueError(f"task {spec.name!r} is not an STS task: use local_task")
    return local_task(spec.name)
