"""Why nli-follow stays near 50: how far the instruction moves a premise, against the margin it has to cross.

For each nli-follow item (the run's seeded subset), under the entailment instruction the margin is
m_e = cos(p_e, entailed) - cos(p_e, contradicted) and under the contradiction instruction
m_c = cos(p_c, contradicted) - cos(p_c, entailed). A model that ignores its instruction has m_c = -m_e exactly, so
the steer m_e + m_c is what the instruction buys; a direction is right when its margin is positive. Also the
cosine of the two instructions' soft prompts (P's or the table's row, flattened), and how far the premise
embedding itself moves. `--plain` scores instead nli-follow with the hypotheses read without the instruction
(`run.plain_reading`), for models trained before run.py recorded it. `--split dev` takes the premises from e-SNLI
dev, which `nli-contrastive` trains on: does a model follow on what it read, or only fail to generalise?

    OMP_NUM_THREADS=1 python experiments/instructions/nli_geometry.py runs/instructions300/pe@gemma3-270m/final \
        --items 100 --out experiments/instructions/nli_geometry.json
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch
from run import EVAL, plain_reading

from promptembedder.auto import load_embedder
from promptembedder.bench.subsets import SEED
from promptembedder.evaluation.nli_follow import (
    InstructionFollowingData,
    evaluate_instruction_following,
    follow_embeddings,
    follow_items,
)
from promptembedder.evaluation.tasks import get_task


def geometry(model, items, entail: str, contradict: str) -> dict:
    out, views = {}, {}
    for name, instruction in (("entailment", entail), ("contradiction", contradict)):
        views[name], hypotheses = follow_embeddings(model, items, instruction, batch_size=32)
        out[name] = np.einsum("nd,nkd->nk", views[name], hypotheses)
    m_e = out["entailment"][:, 0] - out["entailment"][:, 1]
    m_c = out["contradiction"][:, 1] - out["contradiction"][:, 0]
    steer = m_e + m_c
    result = {"items": len(items), "margin_entailment_mean": float(m_e.mean()),
              "margin_contradiction_mean": float(m_c.mean()), "abs_margin_mean": float(np.abs(m_e).mean()),
              "steer_mean": float(steer.mean()), "steer_std": float(steer.std()),
              "entailment_right": float((m_e > 0).mean()), "contradiction_right": float((m_c > 0).mean()),
              "premise_cosine_across_instructions": float((views["entailment"] * views["contradiction"]).sum(1).mean())}
    soft = getattr(model, "soft_prompt", None) or getattr(model, "prompt_for", None)  # P's, or the table's row
    if soft is not None:
        with torch.no_grad():
            a, b = (soft(i) for i in (entail, contradict))
        if isinstance(a, torch.Tensor):
            result["soft_prompt_cosine"] = float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="saved models (folders) or backbones")
    parser.add_argument("--items", type=int, default=EVAL["nli_items"],
                        help="the first N of run.py's seeded nli-follow subset")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plain", action="store_true", help="nli-follow with the hypotheses read without the "
                        "instruction (run.py's subset), not the geometry")
    parser.add_argument("--split", choices=("test", "dev"), default="test",
                        help="e-SNLI's premises: test (nli-follow's, read by no run) or dev (read in training)")
    args = parser.parse_args()
    wordings = get_task("nli-follow").load("test").wordings
    # run.py's seeded subset on test (the same draw as bench.subsets.instruction_subsets)
    items = random.Random(SEED).sample(follow_items(args.split), EVAL["nli_items"])[: args.items]
    results = {}
    for reference in args.models:
        model = load_embedder(reference, device="cpu")
        results[reference] = plain_reading(evaluate_instruction_following(
            model, InstructionFollowingData(items, wordings), batch_size=32)) if args.plain else {
            name: geometry(model, items, *pair) for name, pair in wordings.items()}
        print(reference, json.dumps(results[reference]["training"], indent=1), flush=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")  # after each model: a long list keeps its start


if __name__ == "__main__":
    main()
