"""P started from the prompt table: can PromptEmbedder hold what the table found, and carry it to new wordings?

The P-free prompt table (one free soft prompt per NLI wording) follows its instruction at 2,500 steps (66.5), where
P trained from its start collapses into one prompt. This driver asks whether the architecture or its training is
the limit:

1. **fit** (0 steps): P untrained, W moved by the least change that makes W(P(wording)) equal the table's row for
   every training wording, and W(P(no instruction)), which reads the documents, equal the table's mean row. The
   change is min-norm, W0 + pinv(X) (T - X W0^T) with X P's soft tokens and T the table's prompts, so W0's
   vocabulary alignment is kept off the span of X. On the training wordings the model is the table; on a wording
   it never saw, P's own reading decides.
2. **fit, then trained**: the same start (or, with `score --start`, one saved by `distill --save`), then `run.py`'s
   contrastive training of the row for `--max-steps`. Does training keep the following (and P's prompts apart),
   or collapse them as it does from P's start?
3. **distilled** (`--distill N`): P and W trained by gradient descent for N steps to reproduce the table's prompts
   (`distill_to_table`; E is not read), W then kept: a start where P itself may write a prompt per direction,
   instead of W amplifying P's untrained differences. `routing` says, per group of `nli_wordings.py`'s wordings,
   how many of P's prompts lie nearer their own direction's table prompt: 1 on the trained wordings is the table.

The table may be one trained with one wording per NLI task (`run.py`'s `onewording`: a row per direction); each
training wording then gets its task's row, and `tie` saves that table with a row per training wording, so that a
new wording falls back to the nearest of the eight, not of two.

`score` scores each as `run.py` scores a row (`run.score`), one JSON line per model to --results; `losses` trains
rows for a few steps from the fitted start and keeps their loss per step, which `plot` draws against the table's
on the same batches; `distill` keeps the distilled start's figures unscored:

    OMP_NUM_THREADS=1 python experiments/instructions/from_table.py score \
        --table runs/instructions2500/table+plaindocs+nlionly+lr3e-2@gemma3-270m/final \
        --results experiments/instructions/results_from_table.jsonl --runs-dir runs/from_table --max-steps 0
    OMP_NUM_THREADS=1 python experiments/instructions/from_table.py losses --table ... --out from_table_losses.json \
        --steps 30 table+plaindocs+nlionly+still pe+plaindocs+nlionly+nonoise+still pe+plaindocs+nlionly+nonoise ...
    OMP_NUM_THREADS=2 python experiments/instructions/from_table.py distill --table ... --out distill_onewording.json \
        --distill 60 --distill-lr 1e-4 --distill-alignment-lr 3e-3
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

import torch
from prompt_targets import distill_error, fallback_routing, inference_prompts, routing, table_targets, training_prompts
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
def fit_to_table(model: PromptEmbedder, table: PromptTableEmbedder, draws: int = 0, solve: bool = True) -> dict:
    """Move W so that P's soft tokens for each NLI training wording, and for no instruction, map onto their table
    rows (`table_targets`). With `draws`, W is fitted (ridge) to that many Gumbel draws of P's tokens as well as
    eval's, so that the prompts training sees are the table's too, not only eval's (for a row without Gumbel noise,
    a ridge fit toward W as it is). With `solve` False, W is kept (a distilled start: the exact fit of tied targets is
    ill-conditioned) and only the fit's figures are reported."""
    texts, targets = table_targets(table)
    targets = targets.double()  # (n + 1, K, d_E)
    rows = [text for text in texts if text is not None]
    x = torch.cat([soft_tokens(model, texts, draw=i > 0) for i in range(draws + 1)]).flatten(0, 1)
    t = targets.repeat(draws + 1, 1, 1).flatten(0, 1)
    w0 = model.alignment.linear.weight.double()  # (d_E, d_P)
    if not solve:
        delta = torch.zeros_like(w0.T)
    elif draws:
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
    fitted = inference_prompts(model, texts).double()
    singular = torch.linalg.svdvals(x)
    return {"rows": len(rows), "draws": draws, "relative_residual": float((fitted - targets).norm() / targets.norm()),
            "relative_residual_gumbel": float(sum(noisy) / len(noisy)),
            "delta_norm_over_w0": float(delta.norm() / w0.norm()),
            "soft_token_rank": int((singular > singular[0] * 1e-6).sum()),
            "soft_token_condition": float(singular[0] / singular[-1]),
            "prompt_cosine": model.instruction_report(rows)["prompt_cosine"]}


def distill_to_table(model: PromptEmbedder, table: PromptTableEmbedder, steps: int, lr: float,
                     alignment_lr: float, error: str = "split", log=print) -> dict:
    """Train P and W by regression onto the table's prompts (E is not read): W(P(wording)) -> its task's row,
    W(P(no instruction)) -> the mean row, for `steps` Adam steps on `distill_error` with the tokens as training makes
    them (Gumbel draws unless the row has none), the rates decaying linearly to 0. Unlike the min-norm fit, gradient
    descent moves P too, so P's tokens may spread apart and W need not amplify a near-degenerate subspace."""
    texts, targets = table_targets(table)
    w0 = model.alignment.linear.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.param_groups(alignment_lr), lr=lr, weight_decay=0.0)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    model.train()
    losses, started = [], time.perf_counter()
    for step in range(steps):
        prompts = training_prompts(model, texts)
        loss = distill_error(prompts, targets, error)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        decay.step()
        losses.append(loss.item())
        if step % 25 == 0 or step + 1 == steps:
            log(f"  distill step {step + 1}/{steps}: relative squared error {losses[-1]:.4f}")
    model.eval()
    return {"steps": steps, "lr": lr, "alignment_lr": alignment_lr, "error": error,
            "seconds": time.perf_counter() - started, "loss": losses,
            "loss_first": losses[0], "loss_last": losses[-1],
            "w_change_over_w0": float((model.alignment.linear.weight.detach() - w0).norm() / w0.norm())}


def fitted(row: str, table: PromptTableEmbedder, runs_dir: Path, draws: int = 0,
           distill: tuple[int, float, float, str] | None = None, start: Path | None = None) -> tuple[Embedder, dict]:
    """`row`'s model at its start: the table itself for a table row, else PromptEmbedder (untrained, or `start`, a
    saved one) with W fitted to it (min-norm) or, with `distill` = (steps, P's lr, W's lr, error) and steps > 0, P and
    W distilled to it (then, with `draws`, W ridge-fitted to it from there). A saved start is kept as it is unless
    distilled or `draws` is given."""
    if row.split("+")[0] == "table":
        return table, {}
    torch.manual_seed(BUDGET["seed"])
    model = load_embedder(str(start), device="cpu") if start else build_model(row_config(row, runs_dir),
                                                                            torch.device("cpu"))
    distilled = distill_to_table(model, table, *distill) if distill and distill[0] else None
    solve = draws > 0 or (distilled is None and start is None)
    fit = fit_to_table(model, table, draws, solve=solve)  # W moves first: the routing is the start's
    routes = routing(model, table)
    fit = {**fit, "routing": routes["table"], "routing_own": routes["own"]}
    fit = fit if start is None else {**fit, "start": str(start)}
    return model, fit if distilled is None else {**fit, "distilled": distilled}


@torch.no_grad()
def tie(table: PromptTableEmbedder, out: Path) -> None:
    """A `onewording` table (one row per NLI task) with one row per training wording, each its task's row: the
    same prompts on the trained wordings, but a new wording falls back to its nearest of all eight, as a table
    trained on every wording would, instead of the nearest of two."""
    texts, targets = table_targets(table)
    extra = [""] if "" in table.row else []
    config = dataclasses.replace(table.config, instructions=[*texts[:-1], *extra])
    tied = PromptTableEmbedder(config, device="cpu")
    for row, value in zip(tied.prompts, [*targets[:-1], *(table.prompt_for("") for _ in extra)], strict=True):
        row.data.copy_(value)
    tied.save_pretrained(out)
    print(f"{out}: {len(tied.prompts)} rows; routing of the tie's fallback {fallback_routing(tied)}", flush=True)


def score_rows(args: argparse.Namespace, table: PromptTableEmbedder) -> None:
    """The fit alone (0 steps) or the fit then `run.py`'s training, scored as `run.py` scores a row."""
    for steps in args.max_steps:
        name = f"{args.row}+fromtable{steps}" + start_name(args)
        key = f"{name}@{E}"
        if key in done(args.results):
            continue
        print(f"== {key}", flush=True)
        started = time.perf_counter()
        BUDGET["max_steps"] = max(steps, 1)
        model, fit = fitted(args.row, table, args.runs_dir / name, args.draws, distill_args(args), args.start)
        record = {"key": key, "name": name, "method": "promptembedder", "embedding_model": E,
                  "table": str(args.table), "fit": fit}
        print(json.dumps(fit), flush=True)
        if steps:
            trainer, result, output_dir = train_row(args.row, args.runs_dir / name, model)
            record.update(training_record(args.row, trainer, result, output_dir))
            model = trainer.model
            routes = routing(model, table)
            record.update(routing_after=routes["table"], routing_own_after=routes["own"])
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
        model, fit = fitted(row, table, args.runs_dir, distill=distill_args(args), start=args.start)
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


def distill_args(args: argparse.Namespace) -> tuple[int, float, float, str]:
    return args.distill, args.distill_lr, args.distill_alignment_lr, args.distill_error


def start_name(args: argparse.Namespace) -> str:
    """The start's settings as a row-name suffix, so that two starts never share a results key."""
    start = f"+start-{args.start.parent.name}" if args.start else ""
    distill = (f"+distill{args.distill}+lr{args.distill_lr:g}+alr{args.distill_alignment_lr:g}+{args.distill_error}"
               if args.distill else "")
    return start + distill + (f"+draws{args.draws}" if args.draws else "")


def distill_only(args: argparse.Namespace, table: PromptTableEmbedder) -> None:
    """The distilled start alone, unscored: its fit's figures, routing and loss per step, one entry per setting."""
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    key = args.row + (start_name(args) or "+distill0")
    if key not in results:
        model, results[key] = fitted(args.row, table, args.runs_dir, args.draws, distill_args(args), args.start)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        if args.save:
            model.save_pretrained(args.save)
    print(key, {k: results[key].get(k) for k in ("relative_residual", "routing", "routing_own")}, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = argparse.ArgumentParser(add_help=False)
    start.add_argument("--distill", type=int, default=0,
                       help="steps of regression of P and W onto the table's prompts (then W kept; --draws: refitted)")
    start.add_argument("--distill-lr", type=float, default=1e-4, help="P's learning rate in --distill")
    start.add_argument("--distill-alignment-lr", type=float, default=1e-3, help="W's learning rate in --distill")
    start.add_argument("--distill-error", choices=("split", "plain", "spread"), default="split",
                       help="the regression's error: see distill_error")
    start.add_argument("--start", type=Path, help="a saved PromptEmbedder (distill --save) to start from instead of "
                       "an untrained one: kept as it is, or distilled further with --distill, or refitted with --draws")
    p = sub.add_parser("score", parents=[start],
                       help="the fit, and the fit then trained, scored as run.py scores a row")
    p.add_argument("--table", type=Path, required=True, help="a saved prompt-table model")
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--runs-dir", type=Path, default=Path("runs/from_table"))
    p.add_argument("--max-steps", type=int, nargs="+", default=[0, 300],
                   help="0: the fit alone; N: the fit, then N steps of run.py's training")
    p.add_argument("--draws", type=int, default=0, help="Gumbel draws of P's tokens W is also fitted to")
    p.add_argument("--row", default="pe+plaindocs+nlionly", help="run.py's row whose model and training are used")
    p = sub.add_parser("losses", parents=[start],
                       help="the loss per step of each row from the fitted start, against the table's")
    p.add_argument("--table", type=Path, required=True, help="a saved prompt-table model")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--runs-dir", type=Path, default=Path("runs/from_table_losses"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("rows", nargs="+", help="run.py's rows (a table row is the table itself)")
    p = sub.add_parser("distill", parents=[start], help="the distilled start's figures and routing, unscored")
    p.add_argument("--table", type=Path, required=True, help="a saved prompt-table model")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--runs-dir", type=Path, default=Path("runs/from_table_distill"))
    p.add_argument("--row", default="pe+plaindocs+nlionly+onewording+nonoise", help="run.py's row whose model is used")
    p.add_argument("--draws", type=int, default=0, help="with --distill: W then ridge-fitted to the table")
    p.add_argument("--save", type=Path, help="a folder to save the start to, for nli_wordings.py")
    p = sub.add_parser("tie", help="a onewording table with one row per training wording, each its task's row")
    p.add_argument("--table", type=Path, required=True, help="a saved prompt-table model")
    p.add_argument("--out", type=Path, required=True, help="the folder the tied table is saved to")
    p = sub.add_parser("plot", help="the losses' plot")
    p.add_argument("--losses", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "plot":
        return plot(args.losses, args.out)
    table = load_embedder(str(args.table), device="cpu")
    if not isinstance(table, PromptTableEmbedder):
        raise SystemExit(f"{args.table}: not a prompt-table model ({type(table).__name__})")
    if args.command == "tie":
        return tie(table, args.out)
    {"score": score_rows, "losses": losses, "distill": distill_only}[args.command](args, table)


if __name__ == "__main__":
    main()
