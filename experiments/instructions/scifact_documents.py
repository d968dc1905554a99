"""Why SciFact collapses on the full corpus: the documents' prompt at evaluation against the one training gave them.

Evaluation reads retrieval's documents as MTEB does, without the task instruction (`prompt_type="document"`: under
`prompt_on="both"` the default instruction's prompt). Training read a batch's documents behind the batch's own
instruction. A static prompt gives both sides one prompt either way; PromptEmbedder, the prompt table and LoRA with
the instruction as text do not. This scores SciFact's full test set (300 claims, 5,183 abstracts) a second time with
the documents behind the claim's instruction, as training read them; `promptembedder evaluate`'s outputs
(`full_sets/`) hold the evaluation's own score.

    OMP_NUM_THREADS=1 python experiments/instructions/scifact_documents.py \
        runs/instructions300/pe+div1@gemma3-270m/final --output experiments/instructions/scifact_documents.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from promptembedder.auto import load_embedder
from promptembedder.data.task_sets import RetrievalData
from promptembedder.evaluation.retrieval import evaluate_retrieval
from promptembedder.evaluation.tasks import TaskSpec, get_task
from promptembedder.models.embedder import Embedder


def score_each(description: str, data_of: Callable[[RetrievalData], RetrievalData],
               score: Callable[[Embedder, TaskSpec, RetrievalData], dict]) -> None:
    """The SciFact drivers' command line: `score` each model given on SciFact's test set (through `data_of`), into
    a JSON file by model, with its seconds; a model already in the file is skipped."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("models", nargs="+", help="saved model folders (or a named backbone: bare E)")
    parser.add_argument("--output", type=Path, required=True, help="JSON file; a model already in it is skipped")
    args = parser.parse_args()
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    spec = get_task("scifact")
    data = data_of(spec.load("test"))
    for model_dir in args.models:
        if model_dir in results:
            continue
        model = load_embedder(model_dir)
        started = time.perf_counter()
        row = score(model, spec, data)
        results[model_dir] = {**row, "seconds": round(time.perf_counter() - started, 1)}
        print(model_dir, json.dumps(row), flush=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")


def as_trained(model: Embedder, spec: TaskSpec, data: RetrievalData) -> dict:
    """nDCG@10 and the rest with the documents behind the claim's instruction."""
    scores = evaluate_retrieval(model, data, spec.instruction, document_prompt_type="query")
    return {**scores, "instruction": spec.instruction, "documents": "the claim's instruction"}


if __name__ == "__main__":
    score_each(__doc__.split("\n\n")[0], lambda data: data, as_trained)
