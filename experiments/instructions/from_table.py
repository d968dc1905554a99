"""P started from the prompt table: can PromptEmbedder hold what the table found, and carry it to new wordings?

The P-free prompt table (one free soft prompt per NLI wording) follows its instruction at 2,500 steps (66.5), where
P trained from its start collapses into one prompt. This driver asks whether the architecture or its training is
the limit:

1. **fit** (0 steps): P untrained, W moved by the least change that makes W(P(wording)) equal the table's row for
   every training wording, and W(P(no instruction)), which reads the documents, equal the table's mean row. The
   change is min-norm, W0 + pinv(X) (T - X W0^T) with X P's soft tokens and T the table's prompts, so W0's
   vocabulary alignment is kept off the span of X. On the training wordings the model is the table; on a wording
   it never saw, P's own reading decides.
2. **fit, then trained**: the same start, then `run.py`'s contrastive training of the row for `--max-steps`. Does
   training keep the following (and P's prompts apart), or collapse them as it does from P's start?

`score` scores each as `run.py` scores a row (`run.score`), one JSON line per model to --results; `losses` trains
rows for a few steps from the fitted start and keeps their loss per step, which `plot` draws against the table's
on the same batches:

    OMP_NUM_THREADS=1 python experiments/instructions/from_table.py score \
        --table runs/instructions2500/table+plaindocs+nlionly+lr3e-2@gemma3-270m/final \
        --results experiments/instructions/results_from_table.jsonl --runs-dir runs/from_table --max-steps 0
    OMP_NUM_THREADS=1 python experiments/instructions/from_table.py losses --table ... --out from_table_losses.json \
        --steps 30 table+plaindocs+nlionly+still pe+plaindocs+nlionly+nonoise+still pe+plaindocs+nlionly+nonoise ...
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch
from run import BUDGET, E, done, row_config, score, train_row, training_record

from promptembedder.auto import load_embedder
from promptembedder.models.embedder import Embedder
from promptembedder.models.prompt_embedder import PromptEmbedder
from promptembedder.models.prompt_table import PromptTableEmbedder
from promptembedder.training.build import build_model


def soft_tokens(model: PromptEmbedder, texts: list[str | None], draw: bool) -> torch.Tensor:
    """P's soft tokens (n, K, d_P) for each instruction: one Gumbel draw as training makes them, or eval's."""
    generator = model.generator.train(draw)
    return torch.stack([generator(model.config.instruction_text(text)).embeddings for text in texts]).double()


@torch.no_grad()
def fit_to_table(model: PromptEmbedder, table: PromptTableEmbedder, draws: int = 0) -> dict:
    """Move W so that P's soft tokens for each named table row map onto that row's prompt, and for no instruction
    (how documents are read in `plaindocs` training and by nli-follow's plain reading) onto the table's mean row,
    which is what the table reads them with. With `draws`, W is fitted (ridge) to that many Gumbel draws of P's
    tokens as well as eval's, so that the prompts training sees are the table's too, not only eval's."""
    rows = [text for text in table.config.instructions if text.strip()]
    texts = [*rows, None]
    targets = torch.stack([table.prompt_for(text) for text in texts]).double()  # (n + 1, K, d_E)
    x = torch.cat([soft_tokens(model, texts, draw=i > 0) for i in range(draws + 1)]).flatten(0, 1)
    t = targets.repeat(draws + 1, 1, 1).flatten(0, 1)
    w0 = model.alignment.linear.weight.double()  # (d_E, d_P)
    if draws:
        gram = x.T @ x
        gram += 1e-3 * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
        delta = torch.linalg.solve(gram, x.T @ (t - x @ w0.T))  # (d_P, d_E)
    else:  # fewer tokens than P's width: the exact fit with the least change
        delta = torch.linalg.pinv(x) @ (t - x @ w0.T)
    model.alignment.linear.weight.copy_((w0 + delta.T).to(model.alignment.linear.weight))
    weight = model.alignment.linear.weight.double()
    # in training mode: Gumbel draws, or none for a model without Gumbel noise (then it is the eval residual)
    noisy = [(soft_tokens(model, texts, draw=True) @ weight.T - targets).norm() / targets.norm() for _ in range(4)]
    model.generator.eval()
    fitted = torch.stack([model.soft_prompt(text) for text in texts]).double()
    singular = torch.linalg.svdvals(x)
    return {"rows": len(rows), "draws": draws, "relative_residual": float((fitted - targets).norm() / targets.norm()),
            "relative_residual_gumbel": float(sum(noisy) / len(noisy)),
            "delta_norm_over_w0": float(delta.norm() / w0.norm()),
            "soft_token_rank": int((singular > singular[0] * 1e-6).sum()),
            "soft_token_condition": float(singular[0] / singular[-1]),
            "prompt_cosine": model.instruction_report(rows)["prompt_cosine"]}


def fitted(row: str, table: PromptTableEmbedder, runs_dir: Path, draws: int = 0) -> tuple[Embedder, dict]:
    """`row`'s model at its start: the table itself for a table row, else PromptEmbedder with W fitted to it."""
    if row.split("+")[0] == "table":
        return table, {}
    torch.manual_seed(BUDGET["seed"])
    model = build_model(row_config(row, runs_dir), torch.device("cpu"))
    return model, fit_to_table(model, table, draws)


def score_rows(args: argparse.Namespace, table: PromptTableEmbedder) -> None:
    """The fit alone (0 steps) or the fit then `run.py`'s training, scored as `run.py` scores a row."""
    for steps in args.max_steps:
        name = f"{args.row}+fromtable{steps}" + (f"+draws{args.draws}" if args.draws else "")
        key = f"{name}@{E}"
        if key in done(args.results):
            continue
        print(f"== {key}", flush=True)
        started = time.perf_counter()
        BUDGET["max_steps"] = max(steps, 1)
        model, fit = fitted(args.row, table, args.runs_dir / name, args.draws)
        record = {"key": key, "name": name, "method": "promptembedder", "embedding_model": E,
                  "table": str(args.table), "fit": fit}
        print(json.dumps(fit), flush=True)
        if steps:
            trainer, result, output_dir = train_row(args.row, args.runs_dir / name, model)
            record.update(training_record(args.row, trainer, result, output_dir))
            model = trainer.model
        else:
            record.update(steps=0, train_s=0.0)
            model.save_pretrained(args.runs_dir / name / "final")
        model.eval()
        record.update(score(model, False))
        record["wall_s"] = time.perf_counter() - started
        with open(args.results, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(json.dumps({k: record[k] for k in ("key", "eval_total_s", "wall_s")}), flush=True)


def losses(args: argparse.Namespace, table: PromptTableEmbedder) -> None:
    """Each row's training loss per step from the fitted start (a table row: from the table), unscored: the
    batches are the same for every row (same seed and data), so the rows' losses compare batch by batch."""
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    BUDGET["max_steps"] = args.steps
    for row in args.rows:
        if row in results:
            continue
        print(f"== {row}", flush=True)
        model, fit = fitted(row, table, args.runs_dir)
        _, _, output_dir = train_row(row, args.runs_dir, model)
        with open(output_dir / "log.csv", newline="") as handle:
            logged = [r for r in csv.DictReader(handle) if r.get("loss")]
        results[row] = {"fit": fit, "loss": [float(r["loss"]) for r in logged],
                        "step_time_s": [float(r["step_time_s"]) for r in logged]}
        args.out.write_text(json.dumps(results, indent=2) + "\n")


def plot(path: Path, out: Path) -> None:
    """Each row's loss per step minus the table's on the same batch (0: the row still is the table)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads(path.read_text())
    reference = next(v["loss"] for k, v in results.items() if k.split("+")[0] == "table")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row, value in results.items():
        if row.split("+")[0] != "table":
            gap = [a - b for a, b in zip(value["loss"], reference, strict=False)]
            label = row.removeprefix("pe+plaindocs+nlionly") or "(Gumbel noise)"
            ax.plot(range(1, len(gap) + 1), gap, marker=".", label=label)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="training step (batch of 16, the same batches for every row)",
           ylabel="loss minus the table's on the same batch",
           title="PromptEmbedder started as the prompt table (W fitted), then trained")
    ax.legend(title="pe+plaindocs+nlionly ...", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("score", help="the fit, and the fit then trained, scored as run.py scores a row")
    p.add_argument("--table", type=Path, required=True, help="a saved prompt-table model")
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--runs-dir", type=Path, default=Path("runs/from_table"))
    p.add_argument("--max-steps", type=int, nargs="+", default=[0, 300],
                   help="0: the fit alone; N: the fit, then N steps of run.py's training")
    p.add_argument("--draws", type=int, default=0, help="Gumbel draws of P's tokens W is also fitted to")
    p.add_argument("--row", default="pe+plaindocs+nlionly", help="run.py's row whose model and training are used")
    p = sub.add_parser("losses", help="the loss per step of each row from the fitted start, against the table's")
    p.add_argument("--table", type=Path, required=True, help="a saved prompt-table model")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--runs-dir", type=Path, default=Path("runs/from_table_losses"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("rows", nargs="+", help="run.py's rows (a table row is the table itself)")
    p = sub.add_parser("plot", help="the losses' plot")
    p.add_argument("--losses", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "plot":
        return plot(args.losses, args.out)
    table = load_embedder(str(args.table), device="cpu")
    if not isinstance(table, PromptTableEmbedder):
        raise SystemExit(f"{args.table}: not a prompt-table model ({type(table).__name__})")
    (score_rows if args.command == "score" else losses)(args, table)


if __name__ == "__main__":
    main()
