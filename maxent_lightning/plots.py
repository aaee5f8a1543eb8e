"""Figures written by tasks (matplotlib, headless)."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the headless pyplot of every figure)
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from .errors import UserError  # noqa: E402


def wants_figures(cfg: DictConfig) -> bool:
    """``figures``: true, false, or auto (drawn in single runs, not in a multirun's jobs)."""
    mode = str(cfg.get("figures", "auto")).lower()
    if mode not in ("auto", "true", "false"):
        raise UserError(f"figures={mode} must be auto, true or false")
    if mode == "auto":
        return not OmegaConf.select(cfg, "runtime.multirun", default=False)
    return mode == "true"


def confusion_png(
    path: Path, matrix: torch.Tensor, classes: Sequence[str], title: str = ""
) -> Path:
    """Row-normalized confusion matrix (rows: true label) with counts in each cell."""
    m = matrix.float()
    rates = m / m.sum(1, keepdim=True).clamp_min(1)
    size = min(max(4.0, 0.45 * len(classes)), 12.0)  # 100 classes: 12 inches, not 45
    # A bare Figure with fixed margins: no pyplot state and no layout pass (one draw, not two),
    # since one is written per trained module.
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    step = -(-len(classes) // 25)  # at most ~25 labelled ticks per axis
    labelled = ticks[::step]
    ax.set(xticks=labelled, yticks=labelled, xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels([classes[i] for i in labelled], rotation=90, fontsize=7)
    ax.set_yticklabels([classes[i] for i in labelled], fontsize=7)
    if len(classes) <= 20:
        for i in ticks:
            for j in ticks:
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.subplots_adjust(left=0.1, right=0.88, bottom=0.14, top=0.92)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def line_png(path: Path, curves: dict, xlabel: str, ylabel: str, title: str = "",
             hline: float | None = None) -> Path:
    """One line per label: ``curves = {label: (xs, ys)}``."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=str(label))
    if hline is not None:
        ax.axhline(hline, color="gray", linestyle="--", linewidth=1)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if 1 < len(curves) <= 20:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
