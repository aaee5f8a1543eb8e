"""Tables and figures of the ``circuits`` task, aggregated over seeds.

``report(frames, out_dir)`` takes every ``results.csv`` row with ``task=circuits`` and writes
``circuits.md`` plus one CSV per table and the seed-averaged overlap and necessity figures, per
experiment. Standalone: ``python -m multirun_analysis.circuit_report DIR [DIR ...] --out OUT``.
Numbers read "mean (std)": the mean over seeds of a per-seed value, its std over seeds.
"""

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from maxent_lightning.circuit_figures import NecessityTarget, necessity_png, overlap_png

from .load import AnalysisError, load_runs

NUMERIC = ["seed", "class", "other_class", "num_classes", "class_acc", "class_entropy",
           "entropy_ratio", "other_acc", "other_drop", "other_drop_max", "full_class_acc",
           "rewarded_acc", "nonrewarded_entropy", "param_diff", "class_acc_before",
           "other_acc_before", "size", "density", "inputs_read", "inputs", "units_used", "units",
           "jaccard", "target_class_acc", "target_other_drop"]


def _ms(values: pd.Series, scale: float = 1.0, digits: int = 3) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna() * scale
    if v.empty:
        return "–"
    std = v.std() if len(v) > 1 else 0.0
    return f"{v.mean():.{digits}f} ({std:.{digits}f})"


def _seed_means(df: pd.DataFrame, col: str, by=()) -> pd.DataFrame:
    """Per seed (and ``by``) the mean of ``col`` over the remaining rows."""
    return df.groupby(["seed", *by])[col].mean().reset_index()


def _over_seeds(df: pd.DataFrame, cols, by=(), scale=None, digits=3) -> pd.DataFrame:
    """One row per ``by`` group: "mean (std)" over seeds of the per-seed mean of each column
    (``scale`` and ``digits`` may be given per column)."""
    scale = scale or {}
    places = digits if isinstance(digits, dict) else {}
    groups = df.groupby(list(by)) if by else [((), df)]
    rows = []
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key, strict=True))
        row["seeds"] = part.seed.nunique()
        for label, col in cols.items():
            row[label] = _ms(_seed_means(part, col)[col], scale.get(col, 1.0),
                             places.get(col, 3 if places else digits))
        rows.append(row)
    return pd.DataFrame(rows)


def necessity_target(df: pd.DataFrame):
    """The target the necessity rows were judged against (recorded by the task)."""
    nec = df[df.analysis == "necessity"]
    if "target_class_acc" not in nec or nec.target_class_acc.isna().all():
        return NecessityTarget()  # rows written before the target was recorded
    return NecessityTarget(float(nec.target_class_acc.dropna().iloc[0]),
                           float(nec.target_other_drop.dropna().iloc[0]))


def necessity_tables(df: pd.DataFrame, target) -> tuple[pd.DataFrame, pd.DataFrame]:
    nec = df[df.analysis == "necessity"]
    summary = _over_seeds(nec, {"complete merge: class-i acc": "full_class_acc",
                                "without module i: class-i acc": "class_acc",
                                "other classes: drop (points)": "other_drop"},
                          by=["merge"], scale={"other_drop": 100.0}, digits=2)
    extra = []
    for merge, part in nec.groupby("merge"):
        ok = target.met(part.class_acc, part.other_drop)
        per_class = part.groupby("class")[["class_acc", "other_drop"]].mean()
        extra.append({
            "merge": merge,
            "worst class-i acc": f"{part.class_acc.max():.3f}",
            "worst other drop (points)": f"{100 * part.other_drop.max():.2f}",
            "worst single-class drop (points)": f"{100 * part.other_drop_max.max():.2f}",
            "(seed, i) meeting target": f"{int(ok.sum())}/{len(ok)}",
            "target met (seed means)": bool(target.met(per_class.class_acc,
                                                       per_class.other_drop).all()),
        })
    summary = summary.merge(pd.DataFrame(extra), on="merge")
    by_class = _over_seeds(nec, {"full": "full_class_acc", "removed": "class_acc",
                                 "other drop (points)": "other_drop"},
                           by=["class", "merge"], scale={"other_drop": 100.0}, digits=2)
    wide = by_class.pivot(index="class", columns="merge",
                          values=["full", "removed", "other drop (points)"])
    wide.columns = [f"{merge}: {what}" for what, merge in wide.columns]
    return summary, wide[sorted(wide.columns)].reset_index()


def sufficiency_table(df: pd.DataFrame) -> pd.DataFrame:
    suf = df[df.analysis == "sufficiency"]
    table = _over_seeds(suf, {"class-i acc": "class_acc",
                              "entropy on other classes": "nonrewarded_entropy",
                              "complete weight merge: class-i acc": "full_class_acc"},
                        by=["variant"])
    worst = suf.groupby("variant").class_acc.min().rename("worst class-i acc").reset_index()
    return table.merge(worst, on="variant")


def unlearning_table(df: pd.DataFrame) -> pd.DataFrame:
    """Subtraction vs the merge built without module i (and dropping logits)."""
    un = df[df.analysis == "unlearning"].copy()
    drop = df[(df.analysis == "necessity") & (df["merge"] == "logit")].copy()
    drop["variant"] = "logit dropped"
    both = pd.concat([un.assign(variant="weight " + un.variant), drop])
    table = _over_seeds(both, {"class-i acc": "class_acc", "class-i entropy": "class_entropy",
                               "entropy / ln|C|": "entropy_ratio",
                               "other classes acc": "other_acc",
                               "other drop (points)": "other_drop"},
                        by=["variant"], scale={"other_drop": 100.0})
    table["ln|C|"] = f"{math.log(float(df.num_classes.dropna().iloc[0])):.3f}"
    diff = both.groupby("variant").param_diff.max().rename("max |Δθ| vs subtracted")
    diff = diff.map(lambda v: "–" if pd.isna(v) else f"{v:.1e}")
    return table.merge(diff.reset_index(), on="variant")


def editing_table(df: pd.DataFrame) -> pd.DataFrame:
    ed = df[df.analysis == "editing"]
    return _over_seeds(ed, {"new class acc before": "class_acc_before",
                            "new class acc after": "class_acc",
                            "old classes acc before": "other_acc_before",
                            "old classes acc after": "other_acc",
                            "old classes drop (points)": "other_drop"},
                       by=["merge"], scale={"other_drop": 100.0})


def anatomy_table(df: pd.DataFrame) -> pd.DataFrame:
    an = df[df.analysis == "anatomy"]
    table = _over_seeds(an, {"surviving weights": "size", "density": "density",
                             "inputs read": "inputs_read", "units used": "units_used"},
                        by=["layer"], digits={"size": 1, "density": 4, "inputs_read": 1,
                                              "units_used": 1})
    shape = an.groupby("layer")[["inputs", "units"]].first().astype(int).reset_index()
    order = list(dict.fromkeys(an.layer))
    return shape.merge(table, on="layer").set_index("layer").loc[order].reset_index()


def overlap_tables(df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Mean off-diagonal Jaccard per layer, and per layer the matrix averaged over seeds."""
    ov = df[df.analysis == "overlap"]
    off = ov[ov["class"] != ov.other_class]
    summary = _over_seeds(off, {"mean Jaccard (off-diagonal)": "jaccard"}, by=["layer"])
    order = list(dict.fromkeys(ov.layer))
    summary = summary.set_index("layer").loc[order].reset_index()
    mean = ov.groupby(["layer", "class", "other_class"]).jaccard.mean().reset_index()
    matrices = {layer: mean[mean.layer == layer].pivot(index="class", columns="other_class",
                                                       values="jaccard") for layer in order}
    return summary, matrices


def _section(title: str, table: pd.DataFrame, note: str = "") -> str:
    body = table.to_markdown(index=False) if len(table) else "(no rows)"
    return f"### {title}\n\n{note + chr(10) + chr(10) if note else ''}{body}\n"


def report(frames: pd.DataFrame, out_dir) -> list[Path]:
    """Write the circuits tables (markdown + CSV) and figures into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = frames[frames.task == "circuits"].copy()
    if df.empty:
        return []
    for col in NUMERIC:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("variant", "layer", "merge"):
        if col not in df:
            df[col] = None
    written, lines = [], ["# Circuits: are the modules functional circuits?\n"]
    for experiment, part in df.groupby("experiment"):
        seeds = sorted(int(s) for s in part.seed.dropna().unique())
        target = necessity_target(part)
        nec, nec_class = necessity_tables(part, target)
        suf, unl, edit = sufficiency_table(part), unlearning_table(part), editing_table(part)
        anat = anatomy_table(part)
        ov, matrices = overlap_tables(part)
        tables = {"necessity": nec, "necessity_by_class": nec_class, "sufficiency": suf,
                  "unlearning": unl, "editing": edit, "anatomy": anat, "overlap": ov}
        lines += [
            f"## {experiment} ({part.data.iloc[0]}, {part.model.iloc[0]}, seeds {seeds})\n",
            _section("Necessity: remove module i from the complete merge", nec,
                     f"Target: class-i accuracy ≤ {target.class_acc:.0%} and the other classes "
                     f"lose ≤ {100 * target.other_drop:g} points on average, for every i."),
            _section("Necessity per class", nec_class),
            _section("Sufficiency: module i alone; the weight merge restricted to its mask", suf),
            _section("Unlearning: merged − θ_i vs the merge built without module i", unl,
                     "A model that never had module i is the reference level for class i."),
            _section("Editing: add a later-trained module to the merge of the others", edit),
            _section("Anatomy of one module's circuit (per layer, mean over modules)", anat),
            _section("Overlap of circuits between modules", ov,
                     f"Figure: `circuits_overlap_{experiment}.png` (mean over seeds)."),
        ]
        for name, table in tables.items():
            path = out / f"circuits_{name}_{experiment}.csv"
            table.assign(experiment=experiment).to_csv(path, index=False)
            written.append(path)
        matrix_csv = out / f"circuits_overlap_matrix_{experiment}.csv"
        pd.concat([m.stack().rename("jaccard").reset_index().assign(layer=layer)
                   for layer, m in matrices.items()]).to_csv(matrix_csv, index=False)
        labels = [str(int(c)) for c in next(iter(matrices.values())).index]
        title = f"mean Jaccard overlap over seeds {seeds} — {experiment}"
        written.append(matrix_csv)
        nec_mean = (part[part.analysis == "necessity"]
                    .groupby(["merge", "class"])[["class_acc", "full_class_acc", "other_drop"]]
                    .mean().reset_index().to_dict("records"))
        for suffix in (".png", ".pdf"):  # the PDF: vector, for the paper
            written.append(overlap_png(out / f"circuits_overlap_{experiment}{suffix}",
                                       {k: m.to_numpy() for k, m in matrices.items()}, labels,
                                       title))
            written.append(necessity_png(out / f"circuits_necessity_{experiment}{suffix}",
                                         nec_mean, {}, target,
                                         f"necessity, mean over seeds {seeds} — {experiment}"))
    md = out / "circuits.md"
    md.write_text("\n".join(lines))
    return [md, *written]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m multirun_analysis.circuit_report",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", help="multirun (or job) directories")
    parser.add_argument("--out", required=True, help="folder for tables and figures")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.dirs)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    frame = runs.frame
    if not (frame.task == "circuits").any():
        print(f"error: no task=circuits rows under {', '.join(args.dirs)}", file=sys.stderr)
        return 2
    paths = report(frame, args.out)
    print(f"{runs.summary()}\nwrote {len(paths)} files to {args.out} ({paths[0].name} first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
