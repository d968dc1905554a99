"""nli-follow under many wordings: the four trained pairs, the catalogue's held-out pair, and six new pairs.

nli-follow reports one trained and one held-out wording. A model that follows only the wordings it was trained on
(a table of prompts, or P fitted to one) is told apart from one that reads the instruction by wordings no run
has seen: the six `NEW` pairs are written here, for this test only, and are in no training source or catalogue.
Each pair is scored on `run.py`'s 100 e-SNLI test premises with the hypotheses read without the instruction
(`run.plain_reading`); the JSON gives each pair and the mean of each group.

    OMP_NUM_THREADS=1 python experiments/instructions/nli_wordings.py MODEL [MODEL ...] --out nli_wordings.json \
        --plot nli_wordings.png
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from run import EVAL, plain_reading

from promptembedder.auto import load_embedder
from promptembedder.bench.subsets import SEED
from promptembedder.data.instructions import catalogue, training_instructions
from promptembedder.evaluation.nli_follow import InstructionFollowingData, evaluate_instruction_following, follow_items

NEW = {
    "true-false": ("Find a sentence that is true given this one.", "Find a sentence that is false given this one."),
    "supports": ("Retrieve a statement that this sentence supports.",
                 "Retrieve a statement that this sentence argues against."),
    "question": ("Which hypothesis does this premise entail?", "Which hypothesis does this premise rule out?"),
    "caption": ("Given a description of a scene, find a caption that agrees with it.",
                "Given a description of a scene, find a caption that conflicts with it."),
    "conclusion": ("Retrieve a conclusion that can be drawn from the premise.",
                   "Retrieve a conclusion that the premise makes impossible."),
    "consistent": ("Find text consistent with the following sentence.",
                   "Find text inconsistent with the following sentence."),
}


def wordings() -> dict[str, dict[str, tuple[str, str]]]:
    """The pairs by group: trained, held out (the catalogue's), new (this file's)."""
    entail, contradict = (training_instructions(t) for t in ("nli-entailment", "nli-contradiction"))
    held = [catalogue().held_out[t] for t in ("nli-entailment", "nli-contradiction")]
    known = {*entail, *contradict, *held[0], *held[1]}
    clash = [text for pair in NEW.values() for text in pair if text in known]
    if clash:
        raise SystemExit(f"new wordings already in the catalogue: {clash}")
    return {"trained": {f"trained-{i}": pair for i, pair in enumerate(zip(entail, contradict, strict=True))},
            "held_out": {f"held-out-{i}": pair for i, pair in enumerate(zip(*held, strict=True))},
            "new": dict(NEW)}


def labels(models: list[str]) -> list[str]:
    """Each model's row folder; where two share one (a row trained from two starts), its run folder."""
    names = [Path(m).parent.name.removesuffix("@gemma3-270m") for m in models]
    return [Path(m).parents[1].name if names.count(name) > 1 else name for m, name in zip(models, names, strict=True)]


def plot(results: dict, out: Path) -> None:
    """Each model's mean paired accuracy per group of wordings, with chance (50) and the issue's target (75)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = ("trained", "held_out", "new")
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(groups)
    for i, group in enumerate(groups):
        values = [r[group] for r in results.values()]
        bars = ax.bar([m + (i - 1) * width for m in range(len(results))], values, width, label=group.replace("_", " "))
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    for level, style in ((50, ":"), (75, "--")):
        ax.axhline(level, color="grey", ls=style, lw=0.8)
    ax.set_xticks(range(len(results)), labels(list(results)), rotation=12, ha="right", fontsize=7)
    ax.set(ylim=(30, 85), ylabel="nli-follow paired accuracy (100 test premises)",
           title="nli-follow by wording: trained, the catalogue's held-out pair, six new pairs")
    ax.legend(title="wordings", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help="saved models (folders); none: only redraw --plot")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path, help="a PNG of every model in --out")
    args = parser.parse_args()
    groups = wordings()
    items = random.Random(SEED).sample(follow_items("test"), EVAL["nli_items"])
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for reference in args.models:
        if reference in results:
            continue
        model = load_embedder(reference, device="cpu")
        flat = {name: pair for group in groups.values() for name, pair in group.items()}
        scores = plain_reading(evaluate_instruction_following(model, InstructionFollowingData(items, flat),
                                                              batch_size=32))
        results[reference] = {"pairs": scores, **{
            group: sum(scores[name]["paired_accuracy"] for name in pairs) / len(pairs)
            for group, pairs in groups.items()}}
        print(reference, {g: results[reference][g] for g in groups}, flush=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")  # after each model: a long list keeps its start
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
