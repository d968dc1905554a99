"""The cost of the six-task evaluation per task: CPU seconds (all of them, and the encoding share) and wall time.

CPU time of the process is the stable measure on a shared machine; wall time only on an idle one.

    OMP_NUM_THREADS=1 python scripts/eval_cost.py --threads 1 [--model minilm-l6] [--tasks all]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from promptembedder import evaluation as ev
from promptembedder.auto import load_embedder
from promptembedder.evaluation import encoding


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_embedder(args.model, device="cpu")

    spent = [0.0]
    encode = encoding.encode_texts

    def timed_encode(*a, **k):
        before = cpu_seconds()
        try:
            return encode(*a, **k)
        finally:
            spent[0] += cpu_seconds() - before

    for module in {sys.modules[scorer.__module__] for scorer in ev.SCORERS.values()}:
        module.encode_texts = timed_encode  # each scorer's module looks it up at call time

    print(f"{args.model}, {args.threads} thread(s), batch {args.batch_size}")
    print("| task | main score | CPU s | encoding CPU s | wall s |\n|---|---|---|---|---|")
    total_cpu = total_wall = 0.0
    for task in ev.select_tasks(args.tasks):
        spent[0], cpu, wall = 0.0, cpu_seconds(), time.perf_counter()
        score = ev.evaluate(model, [task], batch_size=args.batch_size, show_progress_bar=False)[task]["main_score"]
        cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
        total_cpu, total_wall = total_cpu + cpu, total_wall + wall
        print(f"| {task} | {score:.2f} | {cpu:.1f} | {spent[0]:.1f} | {wall:.1f} |", flush=True)
    print(f"| all | | {total_cpu:.1f} | | {total_wall:.1f} |")


if __name__ == "__main__":
    main()
