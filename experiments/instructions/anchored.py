"""The mixed objective: contrastive training with the prompt table's spread kept as a term of the loss.

Parts 8-9 of the README: regression onto the spread of the two-row (`onewording`) table's prompts teaches P to route
every NLI wording to its direction, and contrastive training from there keeps the routing but drifts off the table
and stops following; contrastive training alone never routes. Here each step's loss is the contrastive loss plus
`--anchor` times `prompt_targets.distill_error` (`spread` by default): how far the spread of W(P(wording)) about the
wordings' mean is from the table's, over all eight NLI training wordings (training itself reads one per
direction). The shared part (the wordings' mean prompt, the documents' prompt) is left to the contrastive loss.

From P's own start (no `--start`: the row's untrained model, as `run.py` trains it), or from a saved one (the
distilled start of part 8). Each run is scored as `run.py` scores a row, with P's routing (`prompt_targets.routing`)
and the anchor term at each step, one JSON line per run to --results:

    OMP_NUM_THREADS=1 python experiments/instructions/anchored.py train --anchor 1 \
        --table runs/instructions700/table+plaindocs+nlionly+lr3e-2+onewording@gemma3-270m/final \
        --results experiments/instructions/results_anchored.jsonl \
        [--start runs/from_table_distill/spread200+ridge/final]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch
from prompt_targets import distill_error, inference_prompts, routing, table_targets, training_prompts
from run import BUDGET, E, done, score, train_row, training_record

from promptembedder.auto import load_embedder
from promptembedder.data.datasets import TrainExample
from promptembedder.models.prompt_embedder import PromptEmbedder
from promptembedder.models.prompt_table import PromptTableEmbedder
from promptembedder.training import Trainer


class AnchoredLoss:
    """The trainer's loss plus `weight` times the table error of P's prompts for the NLI training wordings, made
    as training makes them (Gumbel draws unless the row has none); each step's term is kept in `terms`."""

    def __init__(self, loss, model: PromptEmbedder, table: PromptTableEmbedder, weight: float, error: str):
        self.texts, self.targets = table_targets(table)
        self.loss, self.model, self.weight, self.error = loss, model, weight, error
        self.terms: list[float] = []

    def table_error(self) -> torch.Tensor:
        prompts = training_prompts(self.model, self.texts)
        return distill_error(prompts, self.targets.to(prompts), self.error)

    def __call__(self, batch: list[TrainExample]) -> torch.Tensor:
        term = self.table_error()
        self.terms.append(term.item())
        return self.loss(batch) + self.weight * term


def anchor(table: PromptTableEmbedder, weight: float, error: str):
    """`run.train_row`'s `prepare`: the trainer's loss wrapped in `AnchoredLoss`."""
    def prepare(trainer: Trainer) -> None:
        trainer.loss = AnchoredLoss(trainer.loss, trainer.model, table, weight, error)
    return prepare


@torch.no_grad()
def eval_table_error(model: PromptEmbedder, table: PromptTableEmbedder, error: str) -> float:
    """The anchor's error of the model's prompts as inference makes them (no Gumbel draws, no gradient), for the
    record; `AnchoredLoss.table_error` is the training-time one."""
    model.eval()
    texts, targets = table_targets(table)
    prompts = inference_prompts(model, texts)
    return float(distill_error(prompts.double(), targets.double(), error))


def moving_mean(values: list[float], window: int = 20) -> list[float]:
    """A trailing mean: one batch's loss is too noisy to compare runs by."""
    return [sum(values[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(values))]


def contrastive_losses(log: Path, terms: list[float] | None = None, weight: float = 0.0) -> list[float]:
    """The run's loss per step from its `log.csv`, less the anchor's share where it had one."""
    with open(log, newline="") as handle:
        losses = [float(r["loss"]) for r in csv.DictReader(handle) if r.get("loss")]
    return [loss - weight * term for loss, term in zip(losses, terms or [0.0] * len(losses), strict=True)]


def plot(results: Path, references: list[str], out: Path) -> None:
    """Left: the contrastive loss per step (20-step mean) of each anchored run and of the unanchored runs given as
    `label=log.csv` (the same seed reads the same batches); right: each anchored run's table error per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for line in results.read_text().splitlines():
        record = json.loads(line)
        label = record["name"].removeprefix("pe+plaindocs+nlionly+onewording+nonoise")
        loss = contrastive_losses(Path(record["log"]), record["anchor_terms"], record["anchor"])
        left.plot(range(1, len(loss) + 1), moving_mean(loss), label=label)
        right.plot(range(1, len(loss) + 1), record["anchor_terms"], label=label)
    for reference in references:
        label, _, log = reference.partition("=")
        loss = contrastive_losses(Path(log))
        left.plot(range(1, len(loss) + 1), moving_mean(loss), ls="--", label=f"{label} (no anchor)")
    left.set(xlabel="training step (batch of 16)", ylabel="contrastive loss, 20-step mean",
             title="the contrastive part of the loss")
    right.set(xlabel="training step", ylabel="table error (relative, squared)", yscale="log",
              title="the anchor: P's prompts against the table (spread, or whole with +split)")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def train(args: argparse.Namespace) -> None:
    """The row trained from its start with the anchor, its routing and table error before and after, scored."""
    table = load_embedder(str(args.table), device="cpu")
    if not isinstance(table, PromptTableEmbedder):
        raise SystemExit(f"{args.table}: not a prompt-table model ({type(table).__name__})")
    name = (f"{args.row}+anchor{args.anchor:g}" + ("" if args.error == "spread" else f"+{args.error}")
            + f"+steps{args.max_steps}" + (f"+start-{args.start.parent.name}" if args.start else ""))
    key = f"{name}@{E}"
    if key in done(args.results):
        return print(f"{key} is in {args.results}: skipped")
    print(f"== {key}", flush=True)
    started = time.perf_counter()
    BUDGET["max_steps"] = args.max_steps
    model = load_embedder(str(args.start), device="cpu") if args.start else None
    record = {"key": key, "name": name, "method": "promptembedder", "embedding_model": E, "table": str(args.table),
              "start": str(args.start) if args.start else None, "anchor": args.anchor, "error": args.error}
    if model is not None:
        routes = routing(model, table)
        record.update(routing_start=routes["table"], routing_own_start=routes["own"],
                      table_error_start=eval_table_error(model, table, args.error))
    trainer, result, output_dir = train_row(args.row, args.runs_dir / name, model,
                                            anchor(table, args.anchor, args.error))
    model = trainer.model.eval()
    routes = routing(model, table)
    record.update(training_record(args.row, trainer, result, output_dir), anchor_terms=trainer.loss.terms,
                  routing_after=routes["table"], routing_own_after=routes["own"],
                  table_error_after=eval_table_error(model, table, args.error))
    print(json.dumps({k: record[k] for k in ("routing_after", "routing_own_after", "table_error_after",
                                             "prompt_cosine")}), flush=True)
    record.update(score(model, False))
    record["wall_s"] = time.perf_counter() - started
    with open(args.results, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps({k: record[k] for k in ("key", "eval_total_s", "wall_s")}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plot", help="the contrastive loss and the table error per step")
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("references", nargs="*", help="label=log.csv of an unanchored run to draw beside")
    p = sub.add_parser("train", help="a run trained with the anchor, then scored")
    p.add_argument("--table", type=Path, required=True, help="a saved prompt-table model (the anchor's targets)")
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--runs-dir", type=Path, default=Path("runs/anchored"))
    p.add_argument("--row", default="pe+plaindocs+nlionly+onewording+nonoise",
                   help="run.py's row whose model and training are used")
    p.add_argument("--anchor", type=float, required=True, help="the table error's weight in the loss")
    p.add_argument("--error", choices=("spread", "split", "plain"), default="spread",
                   help="prompt_targets.distill_error's error")
    p.add_argument("--start", type=Path, help="a saved PromptEmbedder to train from (default: P's own start)")
    p.add_argument("--max-steps", type=int, default=300)
    args = parser.parse_args()
    if args.command == "plot":
        return plot(args.results, args.references, args.out)
    train(args)


if __name__ == "__main__":
    main()
