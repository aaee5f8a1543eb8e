"""The paper's published numbers beside the project's: ``paper.md`` and ``paper.csv``.

``paper/values.csv`` holds every numbered cell of the paper's result tables, transcribed from
the seed texts: the workshop paper's Tables 1, 2 and 4 and the ICLR version's two summary
tables; ``paper/tables.csv`` names each table, ``paper/configurations.csv`` is Table 3 (model
configurations). A value row: ``table``, the row keys in the project's config names
(``model``, ``cardinality`` = |R|, ``imp``, ``loss``, ``merge`` = none/weight/logit, ``data``),
``metric`` (nonrewarded_entropy / rewarded_acc), ``mean``, ``std`` (empty where the table gives
none) and ``bold`` as printed.

Our cells: the test-split rows of single modules (task=single) and of pairwise merges, grouped
by those keys (and by P and T where a sweep varies them): mean, sample std and n over seeds and
classes or pairs, as in ``tables.py``. A data set that stands in for one of the paper's
(``STANDS_IN``: MNIST-5k for MNIST) is compared with it and labelled so.

Flag rule: a cell disagrees when |ours - paper| > 2 * max(our std, the paper's std, FLOOR).
Both stds are spreads of single runs (over seeds and classes or pairs), not errors of the means:
a cell is flagged when the published mean would be an outlying run of ours (or ours of the
paper's), i.e. the two differ beyond the seeds' spread. A test on the means (standard errors,
std/sqrt(n)) would flag the expected small shifts of a different data set (MNIST-5k) in nearly
every cell. The larger std is used because either side's spread is a fair scale and one side
may have few runs. FLOOR = 0.01 keeps cells whose stds print as 0.000 (entropies at log 10)
from flagging shifts of a few thousandths; it is one test image of a 100-image class of
MNIST-5k's test split, the resolution of a single-class accuracy there.
"""

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .load import NoRows, Runs
from .tables import ENTROPY, HEADERS, RACC, name, sort_key

FLOOR = 0.01
STANDS_IN = {"mnist5k": "mnist"}
KEYS = ["model", "cardinality", "imp", "loss", "merge", "data", "metric"]
VARIANTS = ["sparsity", "temperature"]  # swept in some experiments: one row per value
STANDS_IN_NOTE = {
    "mnist5k": "MNIST-5k (the embedded `data=mnist5k`) stands in for MNIST: 5,000 real MNIST "
               "digits (500 per class), of which a fixed stratified 20 % (1,000 digits, 100 per "
               "class) is the test split and the rest is split 80/20 into training and "
               "validation, vs full MNIST's 60,000 training and 10,000 test images. Its rows show "
               "how close the method comes on 5,000 of MNIST's 70,000 digits; they are no claim "
               "about full MNIST.",
}
# What the settings section reads from each job's config.yaml (column -> dotted key).
SETTINGS = {"hidden": "model.hidden", "dropout": "model.dropout", "T": "loss.temperature",
            "IMP scope": "imp.scope", "rounds": "imp.rounds", "P": "imp.sparsity",
            "epochs/round": "imp.round_epochs", "epochs": "trainer.max_epochs",
            "lr": "optimizer.lr", "batch": "data.batch_size",
            "early stop on": "callbacks.early_stopping.monitor"}


def _csv(file: str) -> pd.DataFrame:
    with (resources.files(__package__) / "paper" / file).open() as f:
        return pd.read_csv(f, keep_default_na=False, na_values=[""])


def paper_tables() -> pd.DataFrame:
    """``paper/tables.csv``: table, source (workshop / iclr), kind, title."""
    return _csv("tables.csv")


def paper_values() -> pd.DataFrame:
    """``paper/values.csv`` typed: imp and bold as bool, numbers as float, in the paper's order."""
    v = _csv("values.csv")
    for col in ("imp", "bold"):
        v[col] = v[col].map({True: True, False: False, "true": True, "false": False})
    return v.astype({"cardinality": float, "mean": float, "std": float})


def paper_configurations() -> pd.DataFrame:
    """``paper/configurations.csv``: Table 3 (model, conv, hidden, dropout, temperature)."""
    return _csv("configurations.csv")


def tolerance(ours_std, paper_std, floor: float = FLOOR):
    """2 * max(our std, the paper's std, floor); a missing std (one run, none printed) is left
    out of the max."""
    return 2 * np.fmax(np.fmax(np.asarray(ours_std, float), np.asarray(paper_std, float)), floor)


def verdict(diff, tol) -> np.ndarray:
    """'agrees' when |diff| <= tol, else 'higher' / 'lower' (ours relative to the paper)."""
    diff = np.asarray(diff, float)
    return np.where(np.abs(diff) <= tol, "agrees", np.where(diff > 0, "higher", "lower"))


def ours(df: pd.DataFrame) -> pd.DataFrame:
    """Our cells: mean, std (ddof=1) and n per kind (single / pairwise) and paper keys;
    ``data`` is the paper's data set, ``ours_data`` the one that ran."""
    single = (df["task"] == "single") & (df["merge"] == "none")
    pairwise = (df["task"] == "pairwise") & df["merge"].isin(["weight", "logit"])
    d = df[df["split"].eq("test") & (single | pairwise)]
    d = d.assign(kind=d["task"], ours_data=d["data"], data=d["data"].replace(STANDS_IN),
                 cardinality=d["cardinality"].astype(float))
    ids = ["kind", *KEYS[:-1], "ours_data", *VARIANTS]
    long = d.melt(id_vars=ids, value_vars=[ENTROPY, RACC], var_name="metric")
    long = long.dropna(subset=["value"])
    stats = long.groupby([*ids, "metric"], dropna=False, sort=False)["value"]
    return stats.agg(mean="mean", std="std", n="count").reset_index()


def compare(df: pd.DataFrame) -> pd.DataFrame:
    """Every published cell that the rows of ``df`` fill, beside ours: paper_mean, paper_std,
    mean, std, n, diff (ours - paper), tol, verdict and flagged; in the paper's order."""
    paper = paper_values().reset_index(names="order")
    paper = paper.merge(paper_tables()[["table", "kind"]], on="table")
    paper = paper.rename(columns={"mean": "paper_mean", "std": "paper_std", "bold": "paper_bold"})
    mine = ours(df)
    paper["imp"], mine["imp"] = paper["imp"].astype(object), mine["imp"].astype(object)
    cmp = paper.merge(mine, on=["kind", *KEYS], how="inner")
    if cmp.empty:
        raise NoRows("no rows for paper (no published cell has these runs' data set, model, "
                     "|R|, loss, IMP and merge)")
    cmp = cmp.sort_values(["order", "ours_data", *VARIANTS]).drop(columns=["order", "kind"])
    cmp["diff"] = cmp["mean"] - cmp["paper_mean"]
    cmp["tol"] = tolerance(cmp["std"], cmp["paper_std"])
    cmp["verdict"] = verdict(cmp["diff"], cmp["tol"])
    cmp["flagged"] = cmp["verdict"] != "agrees"
    return cmp.reset_index(drop=True)


def _value(mean, std=np.nan) -> str:
    return f"{mean:.3f}" + ("" if pd.isna(std) else f" ({std:.3f})")


def _data(row) -> str:
    ran, paper = name(row.ours_data), name(row.data)
    return ran if ran == paper else f"{ran} (for {paper})"


def _table_md(cmp: pd.DataFrame, paper: pd.DataFrame, title: str) -> str:
    """One paper table's comparison: the model and the keys that vary in the published table
    (and P, T where ours vary), data set, metric, paper, ours, n, difference, tolerance, flag."""
    keys = ["model"] + [k for k in KEYS[1:-2] if paper[k].nunique() > 1]
    cells = cmp.groupby([*KEYS, "ours_data"], dropna=False)
    keys += [k for k in VARIANTS if cells[k].nunique(dropna=False).max() > 1]
    flag = {"agrees": "✓", "higher": "✗ higher", "lower": "✗ lower"}
    cols = {HEADERS.get(k, k).replace("|", "\\|"): cmp[k].map(name) for k in keys}
    cols |= {"Data": cmp.apply(_data, axis=1), "Metric": cmp["metric"].map(name),
             "Paper": [_value(m, s) for m, s in zip(cmp.paper_mean, cmp.paper_std, strict=True)],
             "Ours": [_value(m, s) for m, s in zip(cmp["mean"], cmp["std"], strict=True)],
             "n": cmp["n"].astype(str), "Δ": cmp["diff"].map(lambda x: f"{x:+.3f}"),
             "±tol": cmp["tol"].map(lambda x: f"{x:.3f}"), "Flag": cmp["verdict"].map(flag)}
    body = pd.DataFrame(cols).to_markdown(index=False, disable_numparse=True)
    flagged = f"{int(cmp.flagged.sum())} of {len(cmp)} cells flagged"
    return f"**{title}**: paper vs ours, {flagged}\n\n{body}"


def _dig(cfg, dotted: str):
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def settings(runs: Runs, models) -> pd.DataFrame:
    """Per model: the distinct values of ``SETTINGS`` over the compared jobs' config.yaml
    (IMP keys from pruned jobs only), beside the paper's Table 3."""
    frame = runs.frame
    frame = frame[frame["model"].isin(models) & frame["task"].isin(["single", "pairwise"])]
    seen: dict = {}
    for job, model in frame.groupby("job", sort=False)["model"].first().items():
        path = Path(job) / "config.yaml"
        try:
            cfg = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except (OSError, yaml.YAMLError):
            continue
        pruned = bool(_dig(cfg, "imp.enabled"))
        for col, key in SETTINGS.items():
            value = _dig(cfg, key)
            if key.startswith("imp.") and not pruned:
                continue  # a dense job's IMP settings are unused
            if value is None and key == "imp.round_epochs":
                value = "epochs // rounds"  # the authors' per-round epochs
            if value is not None:
                text = f"{value:g}" if isinstance(value, float) else str(value)
                seen.setdefault((model, col), set()).add(text)
    if not seen:
        return pd.DataFrame()
    cols = [c for c in SETTINGS if any(k[1] == c for k in seen)]
    conf = paper_configurations().set_index("model")
    rows = []
    for model in sorted({m for m, _ in seen}, key=lambda m: sort_key("model", m)):
        if model in conf.index:
            c = conf.loc[model]
            rows.append({"Model": name(model), "": "paper (Table 3)",
                         "hidden": ("conv + " if c.conv else "") + c.hidden,
                         "dropout": f"{c.dropout:g}", "T": f"{c.temperature:g}"})
        rows.append({"Model": name(model) if model not in conf.index else "", "": "ours",
                     **{c: ", ".join(sorted(seen.get((model, c), {"–"}))) for c in cols}})
    return pd.DataFrame(rows, columns=["Model", "", *cols]).fillna("–")


def markdown(cmp: pd.DataFrame, runs: Runs | None = None) -> str:
    """``paper.md``: the rule, the stand-in data sets, the runs' settings, one table per paper
    table that the runs fill."""
    tables = paper_tables().set_index("table")
    values = paper_values()
    lines = ["## Paper vs ours", "",
             f"{len(cmp)} published cells compared, {int(cmp.flagged.sum())} flagged. Paper: the "
             "published mean (std) (ICLR tables: means only); ours: mean (std) over seeds and "
             "classes or pairs, n values. Δ = ours − paper. Flag ✗ when |Δ| > ±tol = 2 × max(our "
             f"std, paper std, {FLOOR:g}): the two differ beyond the seeds' spread "
             "(multirun_analysis/compare.py explains the rule).", ""]
    lines += [f"- {STANDS_IN_NOTE[d]}" for d in sorted(set(cmp.ours_data)) if d in STANDS_IN_NOTE]
    setup = settings(runs, set(cmp.model)) if runs is not None else pd.DataFrame()
    if len(setup):
        lines += ["", "Settings of the compared runs (from each job's config.yaml), beside the "
                  "paper's Table 3:", "", setup.to_markdown(index=False, disable_numparse=True)]
    for table, part in cmp.groupby("table", sort=False):
        lines += ["", _table_md(part, values[values.table == table], tables.loc[table, "title"])]
    return "\n".join(lines)


def write(runs: Runs, out: Path) -> list[Path]:
    """``paper.md`` and ``paper.csv`` in ``out``; NoRows when no published cell matches."""
    cmp = compare(runs.frame)
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / "paper.md", out / "paper.csv"
    md.write_text(markdown(cmp, runs) + "\n")
    cmp.to_csv(csv, index=False)
    return [md, csv]
