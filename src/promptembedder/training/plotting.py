"""PNG plots of what people would rather see than read: training curves and benchmark bars."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_log(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def plot_training(runs: dict[str, str | Path], out: str | Path, title: str = "Training") -> Path:
    """Loss and dev-score curves of one or several runs (name -> log.csv), side by side."""
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(11, 4))
    for name, log in runs.items():
        rows = read_log(log)
        loss = [(int(r["step"]), float(r["loss"])) for r in rows if r.get("loss")]
        dev = [(int(r["step"]), float(r["dev_score"])) for r in rows if r.get("dev_score")]
        if loss:
            ax_loss.plot(*zip(*loss, strict=True), label=name)
        if dev:
            ax_dev.plot(*zip(*dev, strict=True), marker="o", label=name)
    ax_loss.set(xlabel="step", ylabel="InfoNCE loss", title=f"{title}: loss")
    ax_dev.set(xlabel="step", ylabel="dev main score x100 (STS-B Spearman by default)", title=f"{title}: dev score")
    for ax in (ax_loss, ax_dev):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_bars(values: dict[str, dict[str, float]], out: str | Path, title: str) -> Path:
    """One panel per metric (e.g. step time, peak memory), one bar per method."""
    metrics = list(next(iter(values.values())))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        names = list(values)
        ax.bar(range(len(names)), [values[n][metric] for n in names], color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
