"""The paper's tables: "mean (std)" cells, bold by Welch's t-test, markdown / CSV / LaTeX.

Statistics: mean and sample standard deviation (``ddof=1``, pandas' default; the paper does
not say which it uses) over every row of a cell, i.e. over seeds and classes (Table 1) or
seeds and pairs (Tables 2 and 4). A cell with one value shows ``(-)`` for its std. Every
caption states n, the number of values per cell; nothing is bold where a cell of the group has
fewer than ``MIN_N`` values (Welch's test cannot decide on so few).
"""

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from maxent_lightning.results import ORDERED

from .load import NoRows

ENTROPY, RACC = "nonrewarded_entropy", "rewarded_acc"
ORDER = {
    "data": ["fashion_mnist", "mnist", "har", "yeast", "mnist5k", "digits", "cifar10", "cifar100"],
    "model": ["mlp_shallow", "mlp_deep", "lenet", "resnet18", "vgg11"],
    "loss": ["cross_entropy", "quasi_maxent", "maxent"],
    "merge": ["weight", "logit", "none"],
    "metric": [ENTROPY, RACC, "acc", "loss_value", "barrier_pct"],
}
NAMES = {
    "fashion_mnist": "FMNIST", "mnist": "MNIST", "har": "HAR", "yeast": "Yeast",
    "mnist5k": "MNIST-5k", "digits": "Digits", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
    "mlp_shallow": "MLP", "mlp_deep": "Deep MLP", "lenet": "CNN", "resnet18": "ResNet18",
    "vgg11": "VGG11", "cross_entropy": "XE", "quasi_maxent": "QME", "maxent": "ME",
    "weight": "Weight sum", "logit": "Logit avg", ENTROPY: "Entropy", RACC: "R-Acc",
    "acc": "Acc", "loss_value": "Loss", "barrier_pct": "Barrier %",
}
HEADERS = {
    "data": "Data", "model": "Model", "cardinality": "|R|", "loss": "Loss", "imp": "IMP",
    "sparsity": "P", "temperature": "T", "merge": "Merge", "step": "Modules", "metric": "Metric",
    "width": "Width", "order": "Order",
}
EXTRA = ["sparsity", "temperature", "width"]
# Metrics whose best values are bold: the paper bolds the rewarded accuracy only
# (``--bold-entropy`` adds the non-rewarded entropy).
BOLD = (RACC,)
# Fewer values than this in a cell of a group: no bold in the group (the test cannot decide).
MIN_N = 3
# What the .tex tables need in the document preamble (\toprule..., \multirow).
LATEX_NEEDS = "% needs \\usepackage{booktabs} and \\usepackage{multirow}\n"


def name(value) -> str:
    """Display name of a key value (paper abbreviations; imp as No/Yes)."""
    if isinstance(value, (bool, np.bool_)):
        return "Yes" if value else "No"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return NAMES.get(value, f"{value:g}" if isinstance(value, float) else str(value))


def fmt(mean: float, std: float, n: int, bold: bool = False, style: str = "md",
        digits: int = 3) -> str:
    """``0.991 (0.005)``; the mean is bold (``**x**`` / ``\\textbf{x}``) when ``bold``."""
    if n == 0 or pd.isna(mean):
        return "-" if style == "tex" else "–"
    m = f"{mean:.{digits}f}"
    if bold:
        m = f"**{m}**" if style == "md" else rf"\textbf{{{m}}}"
    return f"{m} ({'-' if pd.isna(std) else f'{std:.{digits}f}'})"


def _differ(a: np.ndarray, b: np.ndarray, alpha: float) -> bool:
    """Welch's two-sided t-test at level ``alpha``; no variance on either side → the means
    decide."""
    if np.var(a) == 0 and np.var(b) == 0:
        return bool(a.mean() != b.mean())
    with warnings.catch_warnings():  # near-identical samples: scipy warns, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        return bool(stats.ttest_ind(a, b, equal_var=False).pvalue < alpha)


def welch_bold(samples: dict, alpha: float = 0.05, min_n: int = MIN_N) -> set:
    """Keys to bold in one group (higher is better for every metric we bold).

    Definition: the key with the highest mean is bold, and so is every other key whose values
    are *not* significantly different from the best's by Welch's t-test (``scipy.stats.ttest_ind``
    with ``equal_var=False``, two-sided, p < ``alpha``). A group with fewer than two keys, or
    with a key of fewer than ``min_n`` values (the test cannot decide), has no bold.
    """
    samples = {k: np.asarray(v, float) for k, v in samples.items()}
    samples = {k: v[~np.isnan(v)] for k, v in samples.items()}
    samples = {k: v for k, v in samples.items() if len(v)}
    if len(samples) < 2 or min(map(len, samples.values())) < min_n:
        return set()
    best = max(samples, key=lambda k: samples[k].mean())
    return {k for k, v in samples.items() if k == best or not _differ(v, samples[best], alpha)}


@dataclass
class Table:
    """Long statistics (one row per cell) and how to lay them out."""

    name: str
    title: str
    stats: pd.DataFrame
    rows: list[str]
    col: str

    def caption(self) -> str:
        """The title with n (values per cell) and, where some group had too few values to
        test, why nothing there is bold."""
        n = self.stats.loc[self.stats["n"] > 0, "n"]
        if n.empty:
            return self.title
        low, high = int(n.min()), int(n.max())
        text = f"{self.title}; n = {low if low == high else f'{low}-{high}'} per cell"
        if "bold =" in self.title and low < MIN_N:
            text += f" (no bold where n < {MIN_N}: Welch's test cannot decide)"
        return text

    def wide(self, style: str) -> pd.DataFrame:
        cells = self.stats.assign(cell=[
            fmt(r.mean, r.std, r.n, r.bold, style) for r in self.stats.itertuples()])
        wide = cells.set_index(self.rows + [self.col, "metric"])["cell"].unstack(
            [self.col, "metric"])
        wide = wide.fillna("-" if style == "tex" else "–")
        cols = sorted(wide.columns,
                      key=lambda c: (sort_key(self.col, c[0]), sort_key("metric", c[1])))
        order = sorted(range(len(wide)), key=lambda i: self._row_rank(wide.index[i]))
        return wide.iloc[order][cols]

    def _row_rank(self, key) -> tuple:
        key = key if isinstance(key, tuple) else (key,)
        return tuple(sort_key(k, v) for k, v in zip(self.rows, key, strict=True))

    def markdown(self) -> str:
        wide = self.wide("md")
        labels = wide.index.to_frame(index=False).map(name)
        flat = {}
        for i, r in enumerate(self.rows):  # blank repeated leading labels, as in the paper
            lead = labels.iloc[:, : i + 1].agg("|".join, axis=1)
            flat[HEADERS.get(r, r).replace("|", "\\|")] = labels.iloc[:, i].where(
                lead != lead.shift(), "")
        for a, b in wide.columns:
            flat[f"{name(a)} {name(b)}"] = wide[(a, b)].to_numpy()
        flat = pd.DataFrame(flat)
        return f"**{self.caption()}**\n\n" + flat.to_markdown(index=False, disable_numparse=True)

    def latex(self) -> str:
        wide = self.wide("tex")
        wide.index = wide.index.set_names([_tex(HEADERS.get(r, r)) for r in self.rows])
        wide.index = wide.index.map(lambda t: tuple(_tex(name(v)) for v in
                                                    (t if isinstance(t, tuple) else (t,))))
        wide.columns = pd.MultiIndex.from_tuples([(_tex(name(a)), _tex(name(b)))
                                                  for a, b in wide.columns])
        return booktabs_rules(wide.to_latex(
            escape=False, multirow=True, multicolumn=True, multicolumn_format="c",
            caption=_tex(self.caption()), label=f"tab:{self.name}",
            column_format="l" * len(self.rows) + "c" * wide.shape[1]))

    def write(self, out: Path) -> list[Path]:
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{self.name}.{ext}" for ext in ("md", "csv", "tex")]
        paths[0].write_text(self.markdown() + "\n")
        self.stats.to_csv(paths[1], index=False)
        paths[2].write_text(LATEX_NEEDS + self.latex())
        return paths


CLINES = re.compile(r"^(\\cline\{\d+-\d+\}\s*)+$")


def booktabs_rules(tex: str) -> str:
    """pandas' group rules made booktabs: a line of ``\\cline`` s becomes one ``\\cmidrule``
    of its widest span (pandas writes nested groups' rules on one line), and none is left
    right above ``\\bottomrule`` or another rule."""
    lines = tex.splitlines()
    out = []
    for i, line in enumerate(lines):
        if not CLINES.match(line.strip()):
            out.append(line)
            continue
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if following.startswith(("\\bottomrule", "\\midrule", "\\cline")):
            continue
        spans = [tuple(map(int, m)) for m in re.findall(r"\\cline\{(\d+)-(\d+)\}", line)]
        a, b = min(spans, key=lambda s: s[0] - s[1])
        out.append(f"\\cmidrule(lr){{{a}-{b}}}")
    return "\n".join(out) + ("\n" if tex.endswith("\n") else "")


def sort_key(col: str, value):
    """Sort key of ``value`` in column ``col``: the paper's order for known keys, numbers
    numerically, missing last."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return (3, 0.0, "")
    if col == "permutation":  # text: 'ordered' first, then the indices by number
        value = -1.0 if value == ORDERED else float(value) if str(value).isdigit() else value
    order = ORDER.get(col)
    if order is not None:
        return (0, float(order.index(value)) if value in order else len(order), str(value))
    if isinstance(value, (int, float, bool, np.number, np.bool_)):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"),
                 ("#", r"\#"), ("|R|", r"$|\mathcal{R}|$"), ("–", "--")):
        text = text.replace(a, b)
    return text


def _extra(df: pd.DataFrame, keys: list[str]) -> list[str]:
    """Keys among EXTRA that vary inside a cell: they become row keys too."""
    out = []
    for k in EXTRA:
        if k not in keys and df[k].notna().any():
            if df.groupby(keys, dropna=False)[k].nunique().max() > 1:
                out.append(k)
    return out


def summarize(df: pd.DataFrame, rows: list[str], col: str = "data",
              metrics=(ENTROPY, RACC), by: str | None = None, bold=BOLD) -> pd.DataFrame:
    """Long stats: rows + col + metric → mean, std (ddof=1), n, and bold (for the metrics in
    ``bold``: the best values of ``by`` within each group of the other keys, see
    :func:`welch_bold`)."""
    keys = rows + [col]
    group = [k for k in keys if k != by]
    out = []
    for _, part in df.groupby(group, dropna=False, sort=False):
        cells = [c for _, c in part.groupby(keys, dropna=False, sort=False)]
        for metric in metrics:
            values = [c[metric].dropna().to_numpy(float) for c in cells]
            best = welch_bold(dict(enumerate(values))) if by and metric in bold else set()
            for i, (c, v) in enumerate(zip(cells, values, strict=True)):
                out.append({**{k: c[k].iloc[0] for k in keys}, "metric": metric,
                            "mean": v.mean() if len(v) else np.nan,
                            "std": v.std(ddof=1) if len(v) > 1 else np.nan,
                            "n": len(v), "bold": i in best})
    stats_ = pd.DataFrame(out, columns=keys + ["metric", "mean", "std", "n", "bold"])
    order = sorted(range(len(stats_)), key=lambda i: tuple(
        sort_key(k, stats_[k].iloc[i]) for k in keys + ["metric"]))
    return stats_.iloc[order].reset_index(drop=True)


def need(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """``df``, or NoRows naming ``what`` needed them where it is empty."""
    if df.empty:
        raise NoRows(f"no rows for {what}")
    return df


def tested(df: pd.DataFrame) -> pd.DataFrame:
    """The rows measured on the test split."""
    return df[df["split"] == "test"]


def table1(df: pd.DataFrame, bold=BOLD) -> list[Table]:
    """Single modules (task=single, no merge): per data × model × IMP, over classes and seeds
    (nothing bold: the paper's Table 1 compares no alternatives)."""
    d = need(tested(df[(df["task"] == "single") & (df["merge"] == "none")]), "table1 (task=single)")
    rows = ["model"] + (["loss"] if d["loss"].nunique() > 1 else []) + ["imp"]
    rows += _extra(d, rows + ["data"])
    title = "Table 1: single modules, non-rewarded entropy and rewarded accuracy, mean (std)"
    return [Table("table1", title, summarize(d, rows), rows, "data")]


def _pairwise(df: pd.DataFrame, merge: str) -> pd.DataFrame:
    return tested(df[(df["task"] == "pairwise") & (df["merge"] == merge)])


def _merges(df: pd.DataFrame, what: str) -> list[str]:
    merges = [m for m in ORDER["merge"][:2] if not _pairwise(df, m).empty]
    if not merges:
        raise NoRows(f"no rows for {what} (task=pairwise, merge=weight|logit)")
    return merges


def bolded(what: str, bold) -> str:
    """The title's note on bold cells: '<what> R-Acc by Welch's test (95%)'."""
    return f"bold = {what} {' and '.join(NAMES[m] for m in bold)} by Welch's test (95%)"


def _pairwise_tables(df: pd.DataFrame, name: str, rows: list[str], title: str,
                     imp_only: bool, bold) -> list[Table]:
    """One table per merge kind of the pairwise rows, grouped by ``rows`` (extra varying
    columns go before the last, the loss); ``title`` is formatted with the merge's name and
    the note on ``bold``."""
    out = []
    for merge in _merges(df, name):
        d = _pairwise(df, merge)
        pruned = d[d["imp"].eq(True)]
        d = pruned if imp_only and len(pruned) else d
        keys = rows[:-1] + _extra(d, rows + ["data"]) + rows[-1:]
        suffix = "" if merge == "weight" else f"_{merge}"
        out.append(Table(f"{name}{suffix}", title.format(merge=NAMES[merge].lower(),
                                                         bold=bolded("best loss's", bold)),
                         summarize(d, keys, by="loss", bold=bold), keys, "data"))
    return out


def table2(df: pd.DataFrame, bold=BOLD) -> list[Table]:
    """Pairwise merges with IMP (IMP rows only when there are any), bold = best loss."""
    title = ("Table 2 ({merge} merge): pairwise entropy and rewarded accuracy, mean (std) over "
             "seeds and pairs; {bold}")
    return _pairwise_tables(df, "table2", ["model", "cardinality", "loss"], title,
                            imp_only=True, bold=bold)


def table4(df: pd.DataFrame, bold=BOLD) -> list[Table]:
    """Pairwise merges with and without IMP, bold = best loss per (model, |R|, IMP, data)."""
    title = ("Table 4 ({merge} merge): pairwise merges with and without IMP, mean (std); "
             "{bold} per group")
    return _pairwise_tables(df, "table4", ["model", "cardinality", "imp", "loss"], title,
                            imp_only=False, bold=bold)


def cifar10(df: pd.DataFrame, bold=BOLD) -> list[Table]:
    """Logit vs weight merge of pairwise modules per data × model × |R|; bold = best merge."""
    d = tested(df[(df["task"] == "pairwise") & df["merge"].isin(["weight", "logit"])])
    d = need(d, "cifar10 (task=pairwise)")
    rows = ["data", "model", "cardinality"]
    rows += [k for k in ("loss", "imp") if d[k].nunique() > 1]
    rows += _extra(d, rows + ["merge"])
    title = ("Logit averaging vs weight sum on pairwise merges, mean (std); "
             + bolded("best merge's", bold))
    return [Table(summary_name("cifar10", d), title,
                  summarize(d, rows, "merge", by="merge", bold=bold), rows, "merge")]


# The CIFAR summaries on other data are named for what they show, not for CIFAR.
SUMMARY_NAMES = {"cifar10": "logit_vs_weight", "cifar100": "merged_modules"}


def summary_name(kind: str, df: pd.DataFrame) -> str:
    """File name of the ``cifar10`` / ``cifar100`` summary of ``df``: that name only when every
    row is of that data set (no 'cifar10' table from MNIST rows)."""
    return kind if set(df["data"]) == {kind} else SUMMARY_NAMES[kind]


def _steps(steps) -> list:
    steps = sorted(s for s in set(steps) if not pd.isna(s))
    if len(steps) <= 12:
        return steps
    keep = {s for s in steps if s in (1, 2, 5, 10, 20, 50, 100)} | {steps[0], steps[-1]}
    return sorted(keep)


def cifar100(df: pd.DataFrame, bold=BOLD) -> list[Table]:
    """Complete merges: rewarded accuracy per number of merged modules, logit vs weight."""
    d = tested(df[(df["task"] == "complete") & df["merge"].isin(["weight", "logit"])])
    d = need(d[d["step"].notna()], "cifar100 (task=complete with steps)")
    d = d[d["step"].isin(_steps(d["step"]))]
    rows = ["data", "model", "step"]
    rows += [k for k in ("loss", "imp", "order") if d[k].nunique() > 1]
    rows += _extra(d, rows + ["merge"])
    title = ("Complete merge: rewarded accuracy by number of merged modules, mean (std) over "
             "seeds and permutations; bold = best merge by Welch's test (95%)")
    return [Table(summary_name("cifar100", d), title,
                  summarize(d, rows, "merge", metrics=(RACC,), by="merge", bold=bold), rows,
                  "merge")]


def width_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Pairwise merges (weight sum, logit average) of backbones with a ``model.width``."""
    d = tested(df[(df["task"] == "pairwise") & df["merge"].isin(["weight", "logit"])])
    return need(d[d["width"].notna()], "width (task=pairwise merges of a backbone with "
                                        "model.width: ResNet18, VGG11)")


def width(df: pd.DataFrame, bold=BOLD) -> list[Table]:
    """Merged rewarded accuracy per backbone width, weight sum vs logit average; bold = best
    merge."""
    d = width_rows(df)
    rows = ["data", "model", "cardinality", "width"]
    rows += [k for k in ("loss", "imp") if d[k].nunique() > 1]
    rows += _extra(d, rows + ["merge"])
    title = ("Pairwise merges by backbone width (model.width): rewarded accuracy, mean (std) over "
             "seeds and pairs; bold = best merge by Welch's test (95%)")
    return [Table("width", title, summarize(d, rows, "merge", metrics=(RACC,), by="merge",
                                             bold=bold), rows, "merge")]
