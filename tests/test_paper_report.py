"""The paper's published values (multirun_analysis/paper/*.csv) and the report that puts ours
beside them (multirun_analysis/compare.py, ``--table paper|report``, ``make report``)."""

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_analysis import _row, _write_job

from maxent_lightning.config import compose_config
from multirun_analysis import analyze
from multirun_analysis.__main__ import main
from multirun_analysis.compare import (
    FLOOR,
    paper_configurations,
    paper_tables,
    paper_values,
    tolerance,
    verdict,
)

ROOT = Path(__file__).resolve().parents[1]
SEEDS = Path(os.environ.get("MAXENT_PAPER_SEEDS", "/work/shared/seeds"))
CLASSES = {"mnist": 10, "fashion_mnist": 10, "har": 6, "yeast": 4}
# Column order of each workshop table in the paper, and how it prints a missing cell.
COLUMNS = {"table1": ["mnist", "fashion_mnist", "har", "yeast"],
           "table2": ["fashion_mnist", "mnist", "har", "yeast"],
           "table4": ["fashion_mnist", "mnist", "har", "yeast"]}
DASH = {"table1": "-", "table2": "–", "table4": "—"}
LOSS = {"cross_entropy": "XE", "quasi_maxent": "QME", "maxent": "ME"}


def _seed(prefix: str) -> str | None:
    found = sorted(SEEDS.glob(f"{prefix}_*.txt")) if SEEDS.is_dir() else []
    return found[0].read_text() if found else None


def _std(std: float) -> str:
    """The paper prints stds with 3 decimals, more where needed (0.0003)."""
    text = f"{std:.3f}"
    return text if float(text) == std else f"{std:.4f}"


def _cells(rows: pd.DataFrame, table: str) -> str:
    """The tab-separated cells of one printed table row, rebuilt from its values."""
    out = []
    for data in COLUMNS[table]:
        for metric in ("nonrewarded_entropy", "rewarded_acc"):
            cell = rows[(rows.data == data) & (rows.metric == metric)]
            if cell.empty:
                out.append(DASH[table])
                continue
            (c,) = cell.itertuples()
            mean = f"<b>{c.mean:.3f}</b>" if c.bold else f"{c.mean:.3f}"
            out.append(f"{mean} ({_std(c.std)})")
    return "\t".join(out)


def _lines(table: str):
    """(row keys, printed row) for every row of a workshop table, in the paper's order."""
    v = paper_values()
    v = v[v.table == table]
    keys = ["model", "cardinality", "imp", "loss"]
    for key, rows in v.groupby(keys, sort=False):
        yield dict(zip(keys, key, strict=True)), _cells(rows, table)


# Rows quoted from the seed text (001_*: the workshop paper; 000_*: the ICLR summary).
QUOTED = {
    ("table1", "mlp_deep", 1, True, "maxent"):
        "Yes\t2.300 (0.001)\t0.998 (0.002)\t2.291 (0.008)\t0.991 (0.007)\t1.762 (0.023)\t"
        "0.999 (0.005)\t1.302 (0.056)\t1.000 (0.000)",
    ("table2", "mlp_shallow", 1, True, "maxent"):
        "ME\t2.287 (0.005)\t<b>0.977</b> (0.005)\t2.287 (0.005)\t<b>0.991</b> (0.005)\t"
        "1.716 (0.033)\t<b>0.985</b> (0.016)\t1.146 (0.077)\t<b>0.853</b> (0.127)",
    ("table2", "mlp_deep", 1, True, "cross_entropy"):
        "XE\t0.215 (0.150)\t0.802 (0.205)\t0.422 (0.190)\t0.689 (0.194)\t1.059 (0.313)\t"
        "0.840 (0.210)\t1.386 (0.0003)\t0.553 (0.144)",
    ("table4", "mlp_deep", 2, False, "maxent"):
        "ME\t2.283 (0.016)\t0.735 (0.087)\t2.297 (0.008)\t0.755 (0.090)\t1.725 (0.039)\t"
        "<b>0.946</b> (0.026)\t—\t0.587 (0.036)",
    ("table4", "lenet", 5, True, "maxent"):
        "ME\t—\t<b>0.864</b> (0.011)\t—\t<b>0.955</b> (0.012)\t—\t—\t—\t—",
}
QUOTED_ICLR = ["| MNIST | Shallow MLP | 0.998 | 2.296 (≈log10=2.30) |",
               "| HAR | Shallow MLP | 0.997 | 1.762 (6 classes) |",
               "| Shallow MLP | 1 | ME | 0.992 | 0.991 |", "| CNN | 1 | ME | 0.997 | 0.984 |"]


def test_every_value_names_a_table_and_lies_in_range():
    tables, v = paper_tables(), paper_values()
    assert tables.table.is_unique
    assert set(v.table) == set(tables[tables.kind != "config"].table)
    assert set(paper_configurations().table) == set(tables[tables.kind == "config"].table)
    assert v.model.isin(["mlp_shallow", "mlp_deep", "lenet"]).all()
    assert v.loss.isin(list(LOSS)).all() and v.data.isin(list(CLASSES)).all()
    assert v.cardinality.isin([1, 2, 5]).all() and v.imp.isin([True, False]).all()
    assert v["merge"].isin(["none", "weight", "logit"]).all()
    kinds = v.merge(tables, on="table").kind
    assert ((kinds == "single") == (v["merge"] == "none")).all()
    acc, ent = v[v.metric == "rewarded_acc"], v[v.metric == "nonrewarded_entropy"]
    assert len(acc) + len(ent) == len(v)
    assert acc["mean"].between(0, 1).all()
    assert (ent["mean"] >= 0).all()
    # Entropy at most log(classes) (+ rounding): HAR has 6 classes (1.762 > log 5).
    assert (ent["mean"] <= ent.data.map(lambda d: math.log(CLASSES[d])) + 5e-4).all()
    iclr = v.table.str.startswith("iclr")
    assert v[~iclr]["std"].between(0, 0.7).all() and v[iclr]["std"].isna().all()
    assert not v.duplicated(["table", "model", "cardinality", "imp", "loss", "merge", "data",
                             "metric"]).any()
    assert v.groupby("table").size().to_dict() == {
        "table1": 40, "table2": 120, "table4": 264, "iclr_single": 4, "iclr_pairwise": 4}
    assert not v[v.metric == "nonrewarded_entropy"].bold.any()  # the paper bolds R-Acc only


def test_tables_agree_with_each_other():
    """Table 2 is Table 4's IMP half (one std printed 0.0003 / 0.000); Table 4 bolds one loss
    and IMP setting per model, |R| and data set; Table 1 is ME on single classes."""
    v = paper_values()
    keys = ["model", "cardinality", "imp", "loss", "data", "metric"]
    t2 = v[v.table == "table2"].set_index(keys)
    t4 = v[v.table == "table4"].set_index(keys).loc[t2.index]
    assert (t2["mean"] == t4["mean"]).all()
    assert (t2["std"] != t4["std"]).sum() == 1 and t2["std"].min() == 0.0003
    bold = v[(v.table == "table4") & (v.metric == "rewarded_acc")]
    assert (bold.groupby(["model", "cardinality", "data"]).bold.sum() == 1).all()
    t1 = v[v.table == "table1"]
    assert set(t1.loss) == {"maxent"} and set(t1.cardinality) == {1}


@pytest.mark.parametrize("key", list(QUOTED), ids=lambda k: "-".join(map(str, k)))
def test_quoted_rows(key):
    """A few rows against the text quoted from the paper (the whole files against the seed
    text in the next test, where it is present)."""
    table, *row = key
    lines = {tuple(k.values()): line for k, line in _lines(table)}
    assert lines[tuple(row)] == QUOTED[key].split("\t", 1)[1]
    seed = _seed("001")
    if seed is not None:
        assert QUOTED[key] in seed


@pytest.mark.skipif(_seed("001") is None, reason=f"no seed text in {SEEDS}")
@pytest.mark.parametrize("table", list(COLUMNS))
def test_every_row_against_the_seed_text(table):
    """Each row rebuilt from values.csv is a line of its table in the paper, with its loss
    label, in the paper's order."""
    text = _seed("001")
    start = {"table1": "Model\tIMP\tMNIST", "table2": "Table 2:", "table4": "Model\t$ \\mathcal"}
    end = {"table1": "Table 1:", "table2": "Figure 2 shows", "table4": "Table 4:"}
    block = text[text.index(start[table]):]
    block = block[:block.index(end[table])].splitlines()
    last = -1
    for keys, cells in _lines(table):
        label = "" if table == "table1" else LOSS[keys["loss"]] + "\t"
        hits = [i for i, line in enumerate(block) if line.endswith("\t" + label + cells)]
        assert len(hits) == 1 and hits[0] > last, (keys, cells)
        last = hits[0]
    assert last > 0


def test_iclr_values_against_the_quoted_text():
    v = paper_values().set_index(["table", "model", "merge", "data", "metric"])["mean"]
    assert v["iclr_single", "mlp_shallow", "none", "mnist", "rewarded_acc"] == 0.998
    assert v["iclr_single", "mlp_shallow", "none", "har", "nonrewarded_entropy"] == 1.762
    assert v["iclr_pairwise", "mlp_shallow", "logit", "mnist", "rewarded_acc"] == 0.992
    assert v["iclr_pairwise", "lenet", "weight", "mnist", "rewarded_acc"] == 0.984
    seed = _seed("000")
    if seed is not None:
        for line in QUOTED_ICLR:
            assert line in seed


def test_table3_is_what_the_model_configs_use():
    import yaml

    for c in paper_configurations().itertuples():
        cfg = yaml.safe_load((ROOT / "conf" / "model" / f"{c.model}.yaml").read_text())["model"]
        assert str(cfg["hidden"]) == c.hidden and cfg["dropout"] == c.dropout
        assert ("channels" in cfg) == c.conv
        # the text's temperature: the model's, or the paper protocol's where they differ (CNN)
        cfg = compose_config([f"model={c.model}", "protocol=paper"])
        assert cfg.loss.temperature == c.temperature


def test_flag_rule():
    assert FLOOR == 0.01
    assert tolerance(0.005, 0.002) == pytest.approx(0.02)  # the floor
    assert tolerance(0.03, 0.05) == pytest.approx(0.10)  # the larger std
    assert tolerance(np.nan, 0.03) == pytest.approx(0.06)  # one run: the paper's std
    assert tolerance(np.nan, np.nan) == pytest.approx(0.02)
    assert list(verdict([0.02, -0.02, 0.0201, -0.0201], 0.02)) == [
        "agrees", "agrees", "higher", "lower"]


# Synthetic pairwise merges on MNIST-5k (5 seeds × 2 pairs): ME |R|=1 rewarded accuracy close
# to the paper's MNIST value, its entropy well below it; two sparsities for QME |R|=2.
ACC = [0.99, 0.98, 0.995, 0.985, 0.99, 0.99, 0.98, 0.995, 0.99, 0.985]


def _pairwise_rows(seed, pair, acc, loss="maxent", card=1, sparsity=0.99, data="mnist5k"):
    return [_row(task="pairwise", data=data, loss=loss, seed=seed, cardinality=card, pair=pair,
                 merge=m, sparsity=sparsity, rewarded_acc=acc, nonrewarded_entropy=2.0)
            for m in ("weight", "logit")]


def _multirun(root, data="mnist5k", shift=0.0):
    for seed in range(5):
        rows = [r for pair in range(2) for r in _pairwise_rows(seed, pair, ACC[2 * seed + pair]
                                                               + shift, data=data)]
        rows += [r for p in (0.9, 0.99) for r in _pairwise_rows(seed, 0, 0.9, "quasi_maxent",
                                                                2, p, data)]
        rows += [_row(task="single", data=data, imp=False, sparsity=0.0, seed=seed,
                      cardinality=1, class_set=str(c), rewarded_acc=1.0,
                      nonrewarded_entropy=2.29 + 0.001 * c) for c in range(3)]
        _write_job(root, seed, rows)
    return root


def _published(table, **keys):
    v = paper_values()
    for k, value in {"table": table, **keys}.items():
        v = v[v[k] == value]
    (row,) = v.itertuples()
    return row


def test_comparison_on_a_synthetic_multirun(tmp_path):
    out = tmp_path / "report"
    report = analyze([_multirun(tmp_path / "sweep")], out, ["report"])
    assert {"paper.md", "paper.csv", "table1.md", "table2.md", "table4.md", "index.md"} <= {
        p.name for p in report.written}
    cmp = pd.read_csv(out / "paper.csv")
    assert set(cmp.table) == {"table1", "table2", "table4", "iclr_single", "iclr_pairwise"}
    assert set(cmp.ours_data) == {"mnist5k"} and set(cmp.data) == {"mnist"}
    me = dict(model="mlp_shallow", cardinality=1, imp=True, loss="maxent", merge="weight",
              data="mnist")
    for table in ("table2", "table4"):
        acc = cmp[(cmp.table == table) & (cmp.loss == "maxent") & (cmp.cardinality == 1)
                  & (cmp.metric == "rewarded_acc")].iloc[0]
        paper = _published(table, metric="rewarded_acc", **me)
        assert acc.paper_mean == paper.mean and acc.paper_std == paper.std
        assert acc["mean"] == pytest.approx(np.mean(ACC)) and acc.n == 10
        assert acc["std"] == pytest.approx(np.std(ACC, ddof=1))
        assert acc["diff"] == pytest.approx(np.mean(ACC) - paper.mean)
        assert acc.tol == pytest.approx(2 * max(np.std(ACC, ddof=1), paper.std, FLOOR))
        assert acc.verdict == "agrees" and not acc.flagged
        ent = cmp[(cmp.table == table) & (cmp.loss == "maxent") & (cmp.cardinality == 1)
                  & (cmp.metric == "nonrewarded_entropy")].iloc[0]
        assert ent["mean"] == pytest.approx(2.0) and ent.verdict == "lower" and ent.flagged
    qme = cmp[(cmp.table == "table2") & (cmp.loss == "quasi_maxent")]
    assert sorted(qme.sparsity) == [0.9, 0.9, 0.99, 0.99]  # one row per P, per metric
    iclr = cmp[cmp.table == "iclr_pairwise"].set_index("merge")
    assert iclr.loc["logit", "paper_mean"] == 0.992 and np.isnan(iclr.loc["logit", "paper_std"])
    single = cmp[cmp.table == "table1"]
    assert set(single.imp) == {False} and (single.n == 15).all()
    md = (out / "paper.md").read_text()
    index = (out / "index.md").read_text()
    assert md.strip() in index and index.index("**Table 2 (") < index.index("## Paper vs ours")
    assert f"{len(cmp)} published cells compared, {int(cmp.flagged.sum())} flagged" in md
    assert "5,000 real MNIST digits (500 per class)" in md and "60,000" in md
    assert "MNIST-5k (for MNIST)" in md and "✗ lower" in md and "✓" in md
    assert "| P " in md.split("**Table 2:")[1].split("**Table 4")[0]  # P varies in a cell
    cells = r"\| 0\.991 \(0\.005\) +\| 0\.988 \(0\.005\) +\| 10 +\| -0\.003 +\| 0\.020 +\| ✓ "
    assert re.search(cells, md)  # Table 2, MLP, |R| = 1, ME, R-Acc


def test_settings_beside_table3(tmp_path):
    """The runs' settings come from each job's config.yaml (IMP keys from pruned jobs only)."""
    root = _multirun(tmp_path / "sweep")
    cfg = ("model: {hidden: [512], dropout: 0.5}\nloss: {temperature: 5.0}\n"
           "imp: {enabled: true, scope: layerwise, rounds: 2, sparsity: 0.99, round_epochs: null}\n"
           "callbacks: {early_stopping: {monitor: val/loss}}\n")
    (root / "0" / "config.yaml").write_text(cfg)
    (root / "1" / "config.yaml").write_text(cfg.replace("true, scope: layerwise", "false, "
                                                        "scope: global").replace("512", "256"))
    analyze([root], tmp_path / "r", ["paper"])
    md = (tmp_path / "r" / "paper.md").read_text()
    table = md.split("Settings of the compared runs")[1].split("**Table 1")[0]
    paper, ours = [line for line in table.splitlines() if "| MLP" in line or "| ours" in line]
    assert re.search(r"paper \(Table 3\) +\| \[512\] +\| 0\.5 +\| 5 ", paper)
    assert re.search(r"ours +\| \[256\], \[512\] +\| 0\.5 +\| 5 +\| layerwise +\| 2 +\| "
                     r"0\.99 +\| epochs // rounds +\| val/loss", ours)


def test_shift_beyond_the_spread_is_flagged(tmp_path):
    analyze([_multirun(tmp_path / "sweep", shift=-0.1)], tmp_path / "r", ["paper"])
    cmp = pd.read_csv(tmp_path / "r" / "paper.csv")
    acc = cmp[(cmp.table == "table2") & (cmp.loss == "maxent") & (cmp.metric == "rewarded_acc")]
    assert list(acc.verdict) == ["lower"] and "✗ lower" in (tmp_path / "r" / "paper.md").read_text()


def test_no_published_cell(tmp_path, capsys):
    """Digits stands in for nothing: `paper` by name is a one-line error, in a group a note."""
    root = _multirun(tmp_path / "digits", data="digits")
    assert main([str(root), "--out", str(tmp_path / "r"), "--table", "paper"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: paper: no rows for paper (no published")
    report = analyze([root], tmp_path / "r2", ["report"])
    assert "paper.md" not in {p.name for p in report.written}
    assert any(n.startswith("skipped paper: ") for n in report.notes)


def test_report_group_skips_what_the_runs_lack(tmp_path):
    root = tmp_path / "pairwise"
    for seed in range(2):
        _write_job(root, seed, _pairwise_rows(seed, 0, 0.98))
    report = analyze([root], tmp_path / "r", ["report"])
    assert {"table2.md", "table4.md", "paper.md"} <= {p.name for p in report.written}
    assert [n.split(":")[0] for n in report.notes] == ["skipped table1"]
    assert main([str(root), "--out", str(tmp_path / "r2"), "--table", "table1"]) == 2


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_report(tmp_path):
    """`make report SCALE=smoke` reads multirun/smoke/table1 and table4 (not table2, which
    table4's sweep holds) and writes reports/smoke/report; without sweeps, one error line."""
    def make(*args):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "-C", str(tmp_path),
                               "-o", ".venv/.installed", f"PY={sys.executable}", "report",
                               *args], capture_output=True, text=True, timeout=300, env=env)

    res = make("SCALE=smoke")
    assert res.returncode == 2 and res.stderr.splitlines()[0] == (
        "error: no sweep of table1, table2 or table4 under multirun/smoke/; run make table2 "
        "SCALE=smoke (or table1, table4) first")
    runs = tmp_path / "multirun" / "smoke"
    _multirun(runs / "table2" / "pairwise_mnist5k", shift=-0.5)
    _multirun(runs / "table4" / "pairwise_mnist5k")
    res = make("SCALE=smoke")
    assert res.returncode == 0, res.stderr
    cmp = pd.read_csv(tmp_path / "reports" / "smoke" / "report" / "paper.csv")
    acc = cmp[(cmp.table == "table2") & (cmp.loss == "maxent") & (cmp.metric == "rewarded_acc")]
    assert acc["mean"].tolist() == [pytest.approx(np.mean(ACC))]  # table4's runs, read once
    index = (tmp_path / "reports" / "smoke" / "report" / "index.md").read_text()
    assert "## Paper vs ours" in index
    assert re.search(r"found 5 job\(s\)", res.stdout)
