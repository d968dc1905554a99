"""Offline evaluation that reproduces MTEB's scoring: STS, retrieval, classification, pair classification, clustering.

MTEB needs the Hugging Face Hub to fetch its data sets; this package scores the same kinds of tasks the same way
from the shared data folder, so training runs and the CLI report numbers comparable to MTEB's. One module per
task type holds its metric; `tasks` holds the registry; `runner` runs a model; `results` prints and saves.
"""

from ..data.datasets import load_sick, load_sts
from .classification import ClassificationData, evaluate_classification, probe_scores, undersample
from .clustering import cluster_scores, evaluate_clustering
from .pair_classification import evaluate_pair_classification, pair_scores
from .results import check_writable, read_results, results_table, results_tables, write_results
from .retrieval import evaluate_retrieval, rank, retrieval_scores
from .runner import SCORERS, evaluate, in_domain_tasks, load_instructions
from .sts import cosine_similarity, evaluate_pairs, evaluate_sts, sts_scores
from .tasks import TASK_TYPES, TASKS, TaskSpec, get_task, select_tasks

__all__ = [
    "SCORERS",
    "TASKS",
    "TASK_TYPES",
    "ClassificationData",
    "TaskSpec",
    "check_writable",
    "cluster_scores",
    "cosine_similarity",
    "evaluate",
    "evaluate_classification",
    "evaluate_clustering",
    "evaluate_pair_classification",
    "evaluate_pairs",
    "evaluate_retrieval",
    "evaluate_sts",
    "get_task",
    "in_domain_tasks",
    "load_instructions",
    "load_sick",
    "load_sts",
    "pair_scores",
    "probe_scores",
    "rank",
    "read_results",
    "results_table",
    "results_tables",
    "retrieval_scores",
    "select_tasks",
    "sts_scores",
    "undersample",
    "write_results",
]
