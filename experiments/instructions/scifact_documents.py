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
from pathlib import Path

from promptembedder.auto import load_embedder
from promptembedder.evaluation.retrieval import evaluate_retrieval
from promptembedder.evaluation.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="saved model folders")
    parser.add_argument("--output", type=Path, required=True, help="JSON file; a model already in it is skipped")
    args = parser.parse_args()
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    spec = get_task("scifact")
    data = spec.load("test")
    for model_dir in args.models:
        if model_dir in results:
            continue
        model = load_embedder(model_dir)
        started = time.perf_counter()
        scores = evaluate_retrieval(model, data, spec.instruction, document_prompt_type="query")
        results[model_dir] = {**scores, "instruction": spec.instruction, "documents": "the claim's instruction",
                              "seconds": round(time.perf_counter() - started, 1)}
        print(model_dir, f"nDCG@10 {scores['main_score']:.2f}", flush=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
