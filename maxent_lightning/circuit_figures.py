"""What the ``circuits`` task and its analysis (``multirun_analysis.circuit_report``) share, free of
torch: the necessity target and the seed-level figures (Jaccard overlap heat maps, necessity
bars), drawn from plain numbers."""

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


@dataclass(frozen=True)
class NecessityTarget:
    """What removing module i from the complete merge should do: class i falls to at most
    ``class_acc`` accuracy, and the other classes lose at most ``other_drop`` on average."""

    class_acc: float = 0.10
    other_drop: float = 0.02

    def met(self, class_acc, other_drop):
        return (class_acc <= self.class_acc) & (other_drop <= self.other_drop)


def overlap_png(path, matrices: dict, labels: Sequence[str], title: str = ""):
    """One Jaccard heat map per layer; the diagonal (always 1) is left blank."""

    n = len(matrices)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 0.6, 3.6), squeeze=False)
    for ax, (layer, mat) in zip(axes[0], matrices.items(), strict=True):
        m = np.array(mat, dtype=np.float64)  # a copy
        np.fill_diagonal(m, np.nan)
        off = m[~np.isnan(m)]
        vmax = max(float(off.max()) if off.size else 1.0, 1e-3)  # off-diagonal range
        im = ax.imshow(m, cmap="viridis", vmin=0, vmax=vmax)
        ticks = range(len(labels))
        ax.set(xticks=ticks, yticks=ticks, title=layer)
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_yticklabels(labels, fontsize=7)
        if len(labels) <= 12:
            for i in ticks:
                for j in ticks:
                    if i != j:
                        ax.text(j, i, f"{float(m[i, j]):.2g}", ha="center", va="center",
                                fontsize=6, color="white" if m[i, j] < vmax / 2 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title or "Jaccard overlap of module masks")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def necessity_png(path, rows: Sequence[dict], labels: dict, target: NecessityTarget,
                  title: str = ""):
    """Class-i accuracy after removing module i, and the mean drop of the other classes."""

    classes = sorted({r["class"] for r in rows})
    merges = ["weight", "logit"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8, 0.9 * len(classes) + 4), 3.4))
    width = 0.38
    for k, merge in enumerate(merges):
        sel = {r["class"]: r for r in rows if r["merge"] == merge}
        xs = [pos + (k - 0.5) * width for pos in range(len(classes))]
        ax1.bar(xs, [sel[c]["class_acc"] for c in classes], width, label=f"{merge} merge − i")
        ax1.scatter(xs, [sel[c]["full_class_acc"] for c in classes], marker="_", s=120,
                    color="black", label="complete merge" if k == 0 else None)
        ax2.bar(xs, [100 * sel[c]["other_drop"] for c in classes], width, label=merge)
    names = [labels.get(c, str(int(c))) for c in classes]
    ax1.axhline(target.class_acc, color="red", ls="--", lw=1,
                label=f"{100 * target.class_acc:g} %")
    ax1.set(ylim=(0, 1.05), ylabel="accuracy on class i", xlabel="removed module i")
    ax2.axhline(100 * target.other_drop, color="red", ls="--", lw=1,
                label=f"{100 * target.other_drop:g} points")
    ax2.set(ylabel="mean drop of other classes (points)", xlabel="removed module i")
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(classes)))
        ax.set_xticklabels(names, fontsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(title or "necessity: remove one module from the complete merge")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
