"""The paper's figures (matplotlib, Agg): mean lines with ±1 std (ddof=1) bands/bars, each as a
PDF (vector, for the paper) and a PNG at print resolution (``DPI``) beside it."""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from maxent_lightning.results import KEYS  # noqa: E402

from .load import NoRows, confusion_matrices  # noqa: E402
from .tables import ENTROPY, RACC, name, need, sort_key, summary_name, tested, width_rows  # noqa: E402

MERGES = ("weight", "logit")
STYLE = {"weight": "tab:blue", "logit": "tab:red", "train": "tab:blue", "test": "tab:orange"}
DPI = 300  # print resolution of the PNGs
POOL_FIGURES = 6  # fewer figures are drawn here: a drawing process takes seconds to start
IDENTITY = [k for k in KEYS if k not in ("seed", "step", "merge", "t", "split", "experiment")]


def _sorted(values, col: str) -> list:
    return sorted(pd.unique(pd.Series(list(values))), key=lambda v: sort_key(col, v))


def _groups(df: pd.DataFrame, keys: list[str]):
    """(values, part) for each combination of ``keys`` in the paper's order."""
    if not keys:
        return [((), df)]
    parts = [(k if isinstance(k, tuple) else (k,), p)
             for k, p in df.groupby(keys, dropna=False, sort=False)]
    return sorted(parts, key=lambda kp: tuple(sort_key(c, v) for c, v in zip(keys, kp[0],
                                                                             strict=True)))


def _varying(df: pd.DataFrame, keys) -> list[str]:
    return [k for k in keys if df[k].nunique() > 1]


def _label(keys, values) -> str:
    return ", ".join(f"{k}={name(v)}" if k in ("sparsity", "temperature", "cardinality", "step",
                                                  "imp", "pair", "permutation", "width", "order")
                     else name(v)
                     for k, v in zip(keys, values, strict=True))


def _axes(n: int, ncols: int, w: float = 4.0, h: float = 3.0, sharey=False, **kw):
    """A grid for ``n`` panels; ``sharey`` (True, 'row', 'col') where panels are compared."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False,
                             sharey=sharey, **kw)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _save(fig, path: Path) -> list[Path]:
    """``path`` (PNG at ``DPI``) and the same figure as a PDF beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    paths = [path, path.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=DPI)
        fig.set_layout_engine("none")  # the PDF keeps the layout the PNG computed
    plt.close(fig)
    return paths


def band(ax, df: pd.DataFrame, x: str, y: str, **kw):
    """Mean of ``y`` per ``x`` with a ±1 std band; nothing when ``y`` is all missing."""
    g = df.dropna(subset=[x, y]).groupby(x)[y].agg(["mean", "std"]).sort_index()
    if g.empty:
        return None
    line = ax.plot(g.index, g["mean"], marker="o", ms=3, **kw)[0]
    std = g["std"].fillna(0)
    ax.fill_between(g.index, g["mean"] - std, g["mean"] + std, color=line.get_color(), alpha=0.2)
    return line


def _files(df, keys, stem: str, out: Path):
    """One (path, title, part) per combination of the ``keys`` that vary."""
    keys = _varying(df, keys)
    for values, part in _groups(df, keys):
        suffix = "".join(f"_{_slug(k, v)}" for k, v in zip(keys, values, strict=True))
        yield out / f"{stem}{suffix}.png", _label(keys, values), part


def _slug(key: str, value) -> str:
    """File-name part: imp / noimp, P0.99, T5, size10, else the raw value."""
    if key == "imp":
        return "imp" if value is True else "noimp" if value is False else "impNA"
    prefix = {"sparsity": "P", "temperature": "T", "size": "size", "width": "width"}.get(key, "")
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return prefix + "".join(c if c.isalnum() or c in "._-" else "-" for c in text)


def _bars(ax, df: pd.DataFrame, groups: list[str], hue: str, y: str):
    """Grouped bars (mean ± std) of ``y``: one cluster per ``groups`` combination."""
    clusters = _groups(df, groups)
    hues = _sorted(df[hue], hue)
    width = 0.8 / max(1, len(hues))
    for j, h in enumerate(hues):
        stats = [c[c[hue].isna() if pd.isna(h) else c[hue].eq(h)][y].agg(["mean", "std"])
                 for _, c in clusters]
        ax.bar(np.arange(len(clusters)) + j * width, [s["mean"] for s in stats], width,
               yerr=[0 if pd.isna(s["std"]) else s["std"] for s in stats], capsize=2,
               label=f"{hue}={name(h)}" if hue != "merge" else name(h))
    ax.set_xticks(np.arange(len(clusters)) + width * (len(hues) - 1) / 2)
    ax.set_xticklabels([_label(groups, k).replace(", ", "\n") for k, _ in clusters], fontsize=7)


def fig3(df: pd.DataFrame, out: Path) -> list[Path]:
    """IMP vs no IMP on pairwise merges (ME loss), per model × |R|; one file per merge kind."""
    d = need(tested(df[(df["task"] == "pairwise") & df["merge"].isin(MERGES)]), "fig3 (pairwise)")
    if d["loss"].eq("maxent").any():
        d = d[d["loss"] == "maxent"]
    contrast(d, "imp", "fig3", "runs with IMP and without (imp=none)")
    paths = []
    for merge in _sorted(d["merge"], "merge"):
        m = d[d["merge"] == merge]
        datas = _sorted(m["data"], "data")
        fig, axes = _axes(2 * len(datas), len(datas), w=max(4.0, 1.2 * m["model"].nunique()
                                                            * m["cardinality"].nunique()),
                          sharey="row")
        for i, (metric, data) in enumerate((mt, da) for mt in (RACC, ENTROPY) for da in datas):
            ax = axes[i]
            _bars(ax, m[m["data"] == data], ["model", "cardinality"], "imp", metric)
            ax.set(title=f"{name(data)}: {name(metric)}", ylabel=name(metric))
            ax.legend(fontsize=7)
        fig.suptitle(f"IMP vs no IMP, pairwise merges ({name(merge)})")
        paths += _save(fig, out / ("fig3.png" if merge == "weight" else f"fig3_{merge}.png"))
    return paths


def contrast(df: pd.DataFrame, key: str, what: str, needed: str) -> None:
    """A figure that sets values of ``key`` against each other needs two of them in ``df``."""
    values = df[key].dropna().unique()
    if len(values) < 2:
        only = ", ".join(f"{key}={name(v)}" for v in values) or f"no {key}"
        raise NoRows(f"only {only} in the data, nothing to contrast; {what} needs "
                     f"{needed}")


def _merge_curves(d: pd.DataFrame, stem: str, out: Path, title: str, metric=RACC):
    """Mean ``metric`` per merge step, colour = merge kind, solid = IMP, dashed = no IMP."""
    keys = _varying(d, ["data", "model", "loss", "sparsity", "temperature", "width", "order"])
    panels = _groups(d, keys)
    fig, axes = _axes(len(panels), 3, sharey=True)
    for ax, (values, part) in zip(axes, panels, strict=False):
        for (merge, imp), p in _groups(part, ["merge", "imp"]):
            band(ax, p, "step", metric, color=STYLE.get(merge), ls="-" if imp else "--",
                 label=f"{name(merge)}, IMP={name(imp)}")
        ax.set(title=_label(keys, values), xlabel="merged modules", ylabel=name(metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7, handlelength=3)
    fig.suptitle(title)
    return _save(fig, out / f"{stem}.png")


def fig4(df: pd.DataFrame, out: Path) -> list[Path]:
    """Complete merge: rewarded accuracy per step, weight vs logit, IMP solid / no IMP dashed."""
    d = tested(df[(df["task"] == "complete") & df["merge"].isin(MERGES) & df["step"].notna()])
    need(d, "fig4 (task=complete with steps)")
    return _merge_curves(d, "fig4", out, "Complete merge: rewarded accuracy per step")


def fig5(df: pd.DataFrame, out: Path) -> list[Path]:
    """Relative barrier (%) along γ(t), one panel per merge step (or |R|), train & test."""
    d = df[(df["task"] == "mode_connectivity") & df["t"].notna() & df["barrier_pct"].notna()]
    need(d, "fig5 (task=mode_connectivity)")
    paths = []
    for path, label, part in _files(d, ["data", "model", "loss", "imp", "width", "order"], "fig5",
                                    out):
        panel = "step" if part["step"].notna().any() else "cardinality"
        panels = _groups(part, [panel])
        fig, axes = _axes(len(panels), 5, w=3.2, h=2.6, sharey=True)
        for ax, (values, p) in zip(axes, panels, strict=False):
            for split in _sorted(p["split"], "split"):
                band(ax, p[p["split"] == split], "t", "barrier_pct", color=STYLE.get(split),
                     label=split)
            ax.axhline(0, color="grey", lw=0.6)
            ax.axhline(2, color="grey", lw=0.6, ls=":")
            ax.set(title=_label([panel], values), xlabel="t", ylabel="barrier %")
            ax.legend(fontsize=7)
        fig.suptitle(f"Relative loss barrier along γ(t) {label}".strip())
        paths += _save(fig, path)
    return paths


def _sweep(df: pd.DataFrame, hue: str, stem: str, out: Path, what: str) -> list[Path]:
    """Entropy and rewarded accuracy per merge step (or |R|), one line per value of ``hue``;
    only where ``hue`` takes two values or more (one value is no sweep)."""
    d = tested(df[df["merge"].isin(MERGES) & df[hue].notna()])
    comp = d[(d["task"] == "complete") & d["step"].notna()]
    d, x = (comp, "step") if len(comp) else (d[d["task"] == "pairwise"], "cardinality")
    need(d, f"{stem} ({what}: complete or pairwise rows)")
    paths = []
    for path, label, part in _files(d, ["data", "model", "loss", "imp", "width", "order"], stem,
                                    out):
        if part[hue].nunique() < 2:
            continue
        merges = _sorted(part["merge"], "merge")
        fig, axes = _axes(2 * len(merges), 2, sharey="col")
        for i, (merge, metric) in enumerate((m, mt) for m in merges for mt in (ENTROPY, RACC)):
            ax = axes[i]
            for (h,), p in _groups(part[part["merge"] == merge], [hue]):
                band(ax, p, x, metric, label=f"{name(h)}")
            ax.set(title=f"{name(merge)}: {name(metric)}", ylabel=name(metric),
                   xlabel="merged modules" if x == "step" else "|R|")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(title=what, fontsize=7)
        fig.suptitle(f"{what} sweep {label}".strip())
        paths += _save(fig, path)
    if not paths:
        values = ", ".join(name(v) for v in _sorted(d[hue], hue))
        raise NoRows(f"no {what} sweep for {stem}: {hue} takes one value ({values}) in each "
                     "data/model/loss/IMP group; sweep two or more")
    return paths


def fig6(df: pd.DataFrame, out: Path) -> list[Path]:
    """Temperature sweep: entropy and rewarded accuracy per merge step per T."""
    return _sweep(df, "temperature", "fig6", out, "T")


def fig7(df: pd.DataFrame, out: Path) -> list[Path]:
    """Pruning-ratio sweep: entropy and rewarded accuracy per merge step per P."""
    return _sweep(df, "sparsity", "fig7", out, "P")


def fig8(df: pd.DataFrame, out: Path) -> list[Path]:
    """CNN pairwise merges: rewarded accuracy vs pruning ratio P, one line per |R| and merge."""
    d = tested(df[(df["task"] == "pairwise") & df["merge"].isin(MERGES) & df["sparsity"].notna()])
    need(d, "fig8 (pairwise with sparsity)")
    if d["sparsity"].nunique() < 2:
        raise NoRows(f"no pruning-ratio sweep for fig8: one P ({name(d['sparsity'].iloc[0])}); "
                     "sweep two or more imp.sparsity values")
    panels = _groups(d, _varying(d, ["data", "model", "loss"]))
    keys = _varying(d, ["data", "model", "loss"])
    fig, axes = _axes(len(panels), 3, sharey=True)
    for ax, (values, part) in zip(axes, panels, strict=False):
        for (card, merge), p in _groups(part, ["cardinality", "merge"]):
            band(ax, p, "sparsity", RACC, ls="-" if merge == "weight" else "--",
                 label=f"|R|={name(card)}, {name(merge)}")
        ax.set(title=_label(keys, values), xlabel="pruning ratio P", ylabel=name(RACC))
        ax.legend(fontsize=7, handlelength=3)
    fig.suptitle("Pairwise merges: rewarded accuracy vs pruning ratio")
    return _save(fig, out / "fig8.png")


def cifar10(df: pd.DataFrame, out: Path) -> list[Path]:
    """Logit vs weight merge bars per model × |R| (one panel per data × metric)."""
    d = tested(df[(df["task"] == "pairwise") & df["merge"].isin(MERGES)])
    need(d, "cifar10 (pairwise)")
    contrast(d, "merge", "the logit-vs-weight figure", "both merge kinds (merge.kind=both)")
    datas = _sorted(d["data"], "data")
    fig, axes = _axes(2 * len(datas), 2, sharey="col")
    for i, (data, metric) in enumerate((da, mt) for da in datas for mt in (RACC, ENTROPY)):
        groups = ["model", "cardinality"] + _varying(d, ["loss", "imp", "sparsity", "width"])
        _bars(axes[i], d[d["data"] == data], groups, "merge", metric)
        axes[i].set(title=f"{name(data)}: {name(metric)}", ylabel=name(metric))
        axes[i].legend(fontsize=7)
    return _save(fig, out / f"{summary_name('cifar10', d)}.png")


def cifar100(df: pd.DataFrame, out: Path) -> list[Path]:
    """Rewarded accuracy vs number of merged modules (complete merge), logit vs weight."""
    d = tested(df[(df["task"] == "complete") & df["merge"].isin(MERGES) & df["step"].notna()])
    need(d, "cifar100 (task=complete with steps)")
    return _merge_curves(d, summary_name("cifar100", d), out,
                         "Accuracy vs number of merged modules")


def width(df: pd.DataFrame, out: Path) -> list[Path]:
    """Merged rewarded accuracy vs backbone width (``model.width``) of pairwise merges: colour =
    merge kind (weight sum, logit average), line style = |R|; one panel per data × model (and
    loss, IMP, P, T where they vary)."""
    d = width_rows(df)
    keys = ["data", "model"] + _varying(d, ["loss", "imp", "sparsity", "temperature"])
    panels = _groups(d, keys)
    styles = dict(zip(_sorted(d["cardinality"], "cardinality"), ("-", "--", ":", "-."),
                      strict=False))
    fig, axes = _axes(len(panels), 3, sharey=True)
    for ax, (values, part) in zip(axes, panels, strict=False):
        for (card, merge), p in _groups(part, ["cardinality", "merge"]):
            band(ax, p, "width", RACC, color=STYLE.get(merge), ls=styles.get(card, "-"),
                 label=f"{name(merge)}, |R|={name(card)}")
        widths = sorted(part["width"].dropna().unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [name(w) for w in widths])
        ax.minorticks_off()
        ax.set(title=_label(keys, values), xlabel="width (model.width)", ylabel=name(RACC))
        ax.legend(fontsize=7, handlelength=3)
    fig.suptitle("Pairwise merges: rewarded accuracy vs width")
    return _save(fig, out / "width.png")


def confusion(jobs, df: pd.DataFrame, out: Path, limit: int = 30) -> list[Path]:
    """Grids of row-normalized confusion matrices from the jobs' ``confusions.json`` (or
    metrics.json), averaged over seeds; panels per class set / step, at most ``limit`` per
    file, one file per task × data × model × loss × IMP × merge (what varies). One class order
    is shown per task × data × model (averaging orders would mix classes): ``ordered`` (0, 1,
    2, ..., as the paper's Figures 19-21) where there is one, else the lowest permutation."""
    mats = confusion_matrices(jobs)
    if mats.empty:
        raise NoRows("no confusion matrices (confusions.json or metrics.json '*confusion')")
    ident = df.groupby("job")[IDENTITY].first().reset_index()
    ident = ident.drop(columns=["class_set"])
    mats = mats.merge(ident, on="job", how="left")
    mats = one_order(mats)
    mats["rate"] = [_normalize(m) for m in mats["matrix"]]
    mats["size"] = [len(m) for m in mats["matrix"]]
    keys = ["task", "data", "model", "loss", "imp", "sparsity", "temperature", "merge", "size"]
    figures = []
    for path, label, part in _files(mats, keys, "confusion", out):
        panel = [k for k in ("step", "cardinality", "class_set") if part[k].notna().any()]
        cells = [(", ".join(_panel_title(k, v) for k, v in zip(panel, values, strict=True)),
                  np.mean(np.stack(p["rate"].to_list()), axis=0), len(p))
                 for values, p in _groups(part, panel)[:limit]]
        figures.append((path, label, cells))
    return [p for paths in drawn(_confusion_figure, figures) for p in paths]


def _confusion_figure(path: Path, label: str, cells) -> list[Path]:
    """One file of ``confusion``: a panel per (title, mean rate matrix, jobs averaged)."""
    fig, axes = _axes(len(cells), 4, w=3.2, h=3.2,
                      layout="constrained")  # room for the title and the colorbar
    for ax, (title, rate, n) in zip(axes, cells, strict=False):
        image = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{title} (n={n})", fontsize=10)
        ticks = range(len(rate)) if len(rate) <= 10 else []
        ax.set(xticks=ticks, yticks=ticks)
        ax.set_xlabel("predicted", fontsize=9)
        ax.set_ylabel("true", fontsize=9)
        ax.tick_params(labelsize=8, length=0)
    fig.colorbar(image, ax=axes[:len(cells)], shrink=0.8, label="fraction of the true class")
    fig.suptitle(f"Confusion matrices (row-normalized, mean over seeds) {label}".strip(),
                 fontsize=11, wrap=True)
    return _save(fig, path)


def drawn(draw, figures: list[tuple]) -> list:
    """``draw(*args)`` for each ``args`` of ``figures``, in order; on a process per core where
    there are ``POOL_FIGURES`` or more (drawing them is most of an analysis of many jobs)."""
    workers = min(len(figures), len(os.sched_getaffinity(0)))
    if workers < 2 or len(figures) < POOL_FIGURES:
        return [draw(*args) for args in figures]
    spawn = multiprocessing.get_context("spawn")  # a clean matplotlib in each
    with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        return list(pool.map(draw, *zip(*figures, strict=True)))


def _panel_title(key: str, value) -> str:
    """``R={0,8}`` for a class set (stored as ``0-8``, which reads as a range), ``|R|=2``,
    else ``key=value``."""
    if key == "class_set" and isinstance(value, str):
        return "R={" + value.replace("-", ",") + "}"
    return f"{'|R|' if key == 'cardinality' else key}={name(value)}"


def one_order(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of one class order per task × data × model: ``ordered`` where there is one, else
    the lowest random permutation; rows without a permutation all stay."""
    rank = df["permutation"].map(lambda v: np.nan if pd.isna(v) else sort_key("permutation", v)[1])
    first = rank.groupby([df["task"], df["data"], df["model"]], dropna=False).transform("min")
    return df[df["permutation"].isna() | (rank == first)]


def _normalize(matrix) -> np.ndarray:
    m = np.asarray(matrix, float)
    return m / np.clip(m.sum(1, keepdims=True), 1, None)
