"""multirun_analysis on a synthetic multirun directory with known values."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from maxent_lightning.results import COLUMNS
from multirun_analysis import AnalysisError, analyze, figures, load_runs
from multirun_analysis.__main__ import main
from multirun_analysis.load import CIRCUIT_KEYS, confusion_matrices
from multirun_analysis.tables import fmt, welch_bold

# Pairwise rewarded accuracy per (cardinality, loss), over 3 seeds × 2 pairs (seed-major).
# |R|=1: ME clearly best with low variance; |R|=2: ME and QME statistically tied.
RACC = {
    (1, "maxent"): [0.98, 0.99, 0.98, 0.99, 0.98, 0.99],
    (1, "quasi_maxent"): [0.90, 0.91, 0.90, 0.91, 0.90, 0.91],
    (1, "cross_entropy"): [0.70, 0.72, 0.70, 0.72, 0.70, 0.72],
    (2, "maxent"): [0.95, 0.80, 0.90, 0.85, 0.93, 0.82],
    (2, "quasi_maxent"): [0.94, 0.79, 0.91, 0.84, 0.92, 0.80],
    (2, "cross_entropy"): [0.50, 0.51, 0.50, 0.51, 0.50, 0.51],
}
ENTROPY = {"maxent": 2.29, "quasi_maxent": 2.0, "cross_entropy": 0.3}


def _write_job(root, num, rows, confusion=None):
    job = root / str(num)
    job.mkdir(parents=True)
    (job / "config.yaml").write_text("seed: 0\n")
    (job / "metrics.json").write_text(json.dumps({"rows": len(rows)}))
    if confusion is not None:  # what the tasks write: a list of {merge, class_set, matrix}
        entries = [{"merge": m, "class_set": "0-1", "matrix": confusion} for m in ("weight",
                                                                                    "logit")]
        (job / "confusions.json").write_text(json.dumps({"confusions": entries}))
    pd.DataFrame(rows, columns=COLUMNS).to_csv(job / "results.csv", index=False)


def _row(**kw):
    base = dict(data="mnist", model="mlp_shallow", loss="maxent", imp=True, sparsity=0.99,
                temperature=5.0, merge="none", split="test", experiment="synthetic")
    return {**base, **kw}


def make_multirun(root):
    """A sweep dir with pairwise, single, complete, mode-connectivity and sweep jobs."""
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    jobs = []
    for (card, loss), values in RACC.items():
        for seed in range(3):
            rows = []
            for pair in range(2):
                v = values[2 * seed + pair]
                ent = np.nan if card == 5 else ENTROPY[loss] + 0.01 * pair
                for merge in ("weight", "logit"):
                    rows.append(_row(task="pairwise", loss=loss, seed=seed, cardinality=card,
                                     pair=pair, merge=merge, rewarded_acc=v,
                                     nonrewarded_entropy=ent))
            jobs.append((rows, np.eye(10).tolist()))
    for seed in range(2):  # single: 10 classes per seed, with and without IMP
        rows = [_row(task="single", imp=imp, seed=seed, cardinality=1, class_set=str(c),
                     rewarded_acc=1.0 - 0.01 * (c % 2), nonrewarded_entropy=2.3 - 0.02 * seed)
                for c in range(10) for imp in (True, False)]
        jobs.append((rows, None))
    for seed in range(2):  # complete merge (+ temperature/sparsity sweeps), mode connectivity
        rows = [_row(task="complete", seed=seed, permutation=0, step=s, merge=m, imp=imp,
                     temperature=temp, sparsity=p, rewarded_acc=1 - 0.02 * s - 0.01 * seed,
                     nonrewarded_entropy=2.3 - 0.1 * s)
                for s in range(1, 5) for m in ("weight", "logit") for imp in (True, False)
                for temp in (1.0, 5.0) for p in (0.9, 0.99)]
        rows += [_row(task="mode_connectivity", seed=seed, step=s, t=t, split=sp,
                      barrier_pct=10 * t * (1 - t) * s + seed)
                 for s in (1, 2) for t in np.linspace(0, 1, 5) for sp in ("train", "test")]
        jobs.append((rows, None))
    for i, (rows, conf) in enumerate(jobs):
        _write_job(root, i, rows, conf)
    (root / str(len(jobs))).mkdir()  # an unfinished job: config, no results.csv
    (root / str(len(jobs)) / "config.yaml").write_text("seed: 9\n")
    return root, len(jobs)


@pytest.fixture
def multirun(tmp_path):
    return make_multirun(tmp_path / "multirun" / "synthetic")


def test_load_counts_finished_and_skipped(multirun):
    root, n = multirun
    runs = load_runs([root])
    assert len(runs.jobs) == n and len(runs.skipped) == 1
    assert runs.frame.imp.isin([True, False]).all()


def test_confusion_sources(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"logit": {"confusion": [[3, 1], [0, 4]]},
                                                       "acc": 0.5, "x": {"confusion": [1]}}))
    (tmp_path / "confusions.json").write_text(json.dumps({"confusions": [
        {"merge": "weight", "step": 2, "class_set": "0-1", "matrix": [[1, 0], [0, 1]]}]}))
    mats = confusion_matrices([tmp_path])
    assert sorted(mats["merge"]) == ["logit", "weight"]
    assert mats.set_index("merge").loc["logit", "matrix"] == [[3, 1], [0, 4]]


def test_format_and_welch():
    assert fmt(0.98512, 0.0054772, 6) == "0.985 (0.005)"
    assert fmt(0.985, 0.005, 6, bold=True) == "**0.985** (0.005)"
    assert fmt(0.985, 0.005, 6, bold=True, style="tex") == r"\textbf{0.985} (0.005)"
    assert fmt(0.5, float("nan"), 1) == "0.500 (-)"
    assert welch_bold({k[1]: v for k, v in RACC.items() if k[0] == 1}) == {"maxent"}
    assert welch_bold({k[1]: v for k, v in RACC.items() if k[0] == 2}) == {
        "maxent", "quasi_maxent"}
    # fewer than 3 values in a cell: the test cannot decide, nothing is bold
    assert welch_bold({"a": [0.9], "b": [0.5, 0.5], "c": [0.9, np.nan]}) == set()
    assert welch_bold({"a": [0.9, 0.9, 0.9], "b": [0.5, 0.5, 0.5]}) == {"a"}
    assert welch_bold({"a": [0.9, 0.9, 0.9], "b": [0.5, 0.5, 0.5]}, min_n=4) == set()
    assert welch_bold({"only": [1.0, 0.9]}) == set()


def test_tables_known_values_and_bold(multirun, tmp_path):
    root, _ = multirun
    out = tmp_path / "report"
    report = analyze([root], out, ["table1", "table2", "table4"])
    names = {p.name for p in report.written}
    for stem in ("table1", "table2", "table2_logit", "table4", "table4_logit"):
        assert {f"{stem}.md", f"{stem}.csv", f"{stem}.tex"} <= names
    stats = pd.read_csv(out / "table2.csv")
    for (card, loss), values in RACC.items():
        cell = stats[(stats.cardinality == card) & (stats.loss == loss)
                     & (stats.metric == "rewarded_acc")].iloc[0]
        assert cell["mean"] == pytest.approx(np.mean(values))
        assert cell["std"] == pytest.approx(np.std(values, ddof=1))  # ddof=1 documented
        assert cell["n"] == 6
        assert cell["bold"] == (loss == "maxent" or (card, loss) == (2, "quasi_maxent"))
    md = (out / "table2.md").read_text()
    assert "**0.985** (0.005)" in md  # |R|=1 ME: mean 0.985, std 0.0055
    assert "0.905 (0.005)" in md and "**0.905**" not in md
    assert "**0.875** (0.061)" in md and "**0.867** (0.065)" in md  # tied at |R|=2
    assert "MNIST R-Acc" in md and "| XE " in md
    tex = (out / "table2.tex").read_text()
    assert r"\textbf{0.985} (0.005)" in tex and r"\begin{tabular}" in tex
    t1 = pd.read_csv(out / "table1.csv")
    cell = t1[(t1.imp) & (t1.metric == "rewarded_acc")].iloc[0]
    assert cell["mean"] == pytest.approx(0.995) and cell["n"] == 20
    assert cell["std"] == pytest.approx(np.std([1.0, 0.99] * 10, ddof=1))
    t4 = pd.read_csv(out / "table4.csv")
    # the paper bolds R-Acc only: ME at |R|=1, ME and QME (tied) at |R|=2
    assert set(t4.imp) == {True} and t4.bold.sum() == 3
    assert not t4[t4.metric == "nonrewarded_entropy"].bold.any()
    assert "2.295 (0.005)" in md and "**2.29" not in md and "bold = best loss's R-Acc" in md


def test_bold_entropy_on_request(multirun, tmp_path):
    """--bold-entropy also bolds the best non-rewarded entropy (ME's, in every group)."""
    root, _ = multirun
    assert main([str(root), "--out", str(tmp_path / "r"), "--table", "table4",
                 "--bold-entropy"]) == 0
    t4 = pd.read_csv(tmp_path / "r" / "table4.csv")
    entropy = t4[t4.metric == "nonrewarded_entropy"]
    assert t4.bold.sum() == 3 + 2 and entropy.bold.sum() == 2
    assert set(entropy[entropy.bold].loss) == {"maxent"}
    md = (tmp_path / "r" / "table4.md").read_text()
    assert "**2.295** (0.005)" in md and "R-Acc and Entropy by Welch's test" in md


def test_figures_written(multirun, tmp_path):
    root, _ = multirun
    _write_job(root, 99, [_row(task="pairwise", imp=False, seed=s, cardinality=1, pair=0, merge=m,
                               rewarded_acc=0.8, nonrewarded_entropy=2.0)
                          for s in range(3) for m in ("weight", "logit")])  # fig3's contrast
    report = analyze([root], tmp_path / "report")
    names = {p.name for p in report.written}
    # Files split by what varies: IMP for the sweeps, the loss for confusion grids.
    for fig in ("fig3.png", "fig3_logit.png", "fig4.png", "fig5.png", "fig6_imp.png",
                "fig7_noimp.png", "logit_vs_weight.png", "merged_modules.png",
                "confusion_maxent_weight.png", "confusion_cross_entropy_logit.png", "index.md"):
        assert fig in names, fig
    # One pruning ratio in the pairwise rows: no fig8; MNIST rows: nothing named cifar*.
    assert not any(n.startswith(("fig8", "cifar")) for n in names), names
    assert any(n.startswith("skipped fig8: no pruning-ratio sweep") for n in report.notes)
    for path in report.written:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:4] == b"\x89PNG"


def test_only_supported_sweeps(tmp_path):
    """Pairwise rows at one T and one P: `all` draws no T or P sweep and no fig8; asking for
    one by name is a one-line error."""
    root = tmp_path / "pairwise"
    rows = [_row(task="pairwise", seed=seed, cardinality=1, pair=0, merge=m, rewarded_acc=0.9,
                 nonrewarded_entropy=2.0) for seed in range(2) for m in ("weight", "logit")]
    _write_job(root, 0, rows)
    report = analyze([root], tmp_path / "r")
    names = {p.name for p in report.written}
    assert "table2.md" in names and "logit_vs_weight.png" in names
    assert not any(n.startswith(("fig3", "fig6", "fig7", "fig8")) for n in names), names
    assert [n.split(":")[0] for n in report.notes if "sweep" in n] == [
        "skipped fig6", "skipped fig7", "skipped fig8"]
    # IMP-only rows: no "IMP vs no IMP" figure, one line says why
    assert [n for n in report.notes if n.startswith("skipped fig3")] == [
        "skipped fig3: only imp=Yes in the data, nothing to contrast; fig3 needs runs with "
        "IMP and without (imp=none)"]
    assert main([str(root), "--out", str(tmp_path / "r2"), "--table", "fig6"]) == 2


@pytest.mark.parametrize("data", ["cifar10", "mnist5k"])
def test_cifar_summaries_named_by_data(tmp_path, data):
    root = tmp_path / data
    rows = [_row(task="pairwise", data=data, seed=s, cardinality=1, pair=0, merge=m,
                 rewarded_acc=0.9, nonrewarded_entropy=2.0) for s in range(2)
            for m in ("weight", "logit")]
    _write_job(root, 0, rows)
    names = {p.name for p in analyze([root], tmp_path / "r", ["cifar10"]).written}
    stem = "cifar10" if data == "cifar10" else "logit_vs_weight"
    assert {f"{stem}.md", f"{stem}.tex", f"{stem}.png"} <= names, names


def test_shared_axes_colorbar_and_latex(multirun, tmp_path, monkeypatch):
    """Compared panels share their y range (fig4: one panel per P; fig6: one column per
    metric), even where their values lie far apart; confusion grids carry a colorbar; the .tex
    states the LaTeX packages it needs."""
    root = tmp_path / "complete"
    rows = [_row(task="complete", seed=seed, permutation=0, step=s, merge=m, sparsity=p,
                 temperature=t, rewarded_acc=(0.9 if p == 0.9 else 0.2) - 0.01 * s - 0.01 * seed,
                 nonrewarded_entropy=(2.0 if m == "weight" else 0.5) + 0.01 * s * t)
            for seed in range(2) for s in range(1, 4) for m in ("weight", "logit")
            for p in (0.9, 0.99) for t in (1.0, 5.0)]
    _write_job(root, 0, rows)
    figs = {}

    def keep(fig, path):
        figs[path.name] = fig
        return save(fig, path)

    save = figures._save
    monkeypatch.setattr(figures, "_save", keep)
    monkeypatch.setattr(figures, "POOL_FIGURES", 10**6)  # drawn here, where keep sees them
    analyze([root], tmp_path / "r", ["fig4", "fig6"])
    panels = [ax for ax in figs["fig4.png"].axes if ax.get_visible()]
    assert len(panels) == 4 and len({ax.get_ylim() for ax in panels}) == 1
    fig6 = figs["fig6.png"].axes  # rows: weight, logit; columns: entropy, R-Acc
    assert fig6[0].get_ylim() == fig6[2].get_ylim() and fig6[1].get_ylim() == fig6[3].get_ylim()
    assert fig6[0].get_ylim() != fig6[1].get_ylim()

    analyze([multirun[0]], tmp_path / "r", ["confusion", "table2"])
    grid = figs["confusion_maxent_weight.png"]
    assert [ax.get_label() for ax in grid.axes].count("<colorbar>") == 1
    tex = (tmp_path / "r" / "table2.tex").read_text()
    assert tex.startswith(r"% needs \usepackage{booktabs} and \usepackage{multirow}")
    assert r"\toprule" in tex and r"\multirow" in tex


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "multirun_analysis", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_cli(multirun, tmp_path):
    root, n = multirun
    res = _cli(root, "--out", tmp_path / "r", "--table", "table2")
    assert res.returncode == 0, res.stderr
    assert f"found {n} job(s)" in res.stdout and "skipped 1" in res.stdout
    assert (tmp_path / "r" / "table2.md").is_file()


def test_cli_missing_dir(tmp_path):
    res = _cli(tmp_path / "nope", "--out", tmp_path / "r")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such directory"]


@pytest.mark.parametrize("case", ["no_results", "unknown_table", "no_rows"])
def test_cli_bad_input(tmp_path, capsys, case):
    (tmp_path / "bad" / "0").mkdir(parents=True)  # a sweep whose job never finished
    root = tmp_path / "synthetic"
    if case != "no_results":
        _write_job(root, 0, [_row(task="single", seed=0, rewarded_acc=1.0)])
    args = {"no_results": [tmp_path / "bad"], "unknown_table": [root, "--table", "nosuch"],
            "no_rows": [root, "--table", "fig5"]}[case]
    assert main([*map(str, args), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def _one_job(tmp_path, rows=4):
    root = tmp_path / "sweep"
    odd = '0,x\n"y"'  # quoted by to_csv: a comma, a newline and quotes in one field
    _write_job(root, 0, [_row(task="single", seed=s, class_set=odd if s == 0 else str(s),
                              rewarded_acc=1.0) for s in range(rows)])
    return root, root / "0"


def _cut(text):
    return text[:text.rindex("\n", 0, -1) + 1]  # the last row removed, at a row boundary


RERUN = "rerun the job: delete {job}/metrics.json and rerun its sweep command"
BROKEN = {  # how results.csv is damaged -> the problem the error line names
    "mid_row": (lambda t: t[:-4], "its last line is incomplete (truncated)"),
    "row_boundary": (_cut, "3 rows, but its metrics.json records 4 (truncated?)"),
    "header_only": (lambda t: t[:t.index("\n") + 1],
                    "0 rows, but its metrics.json records 4 (truncated?)"),
    "empty": (lambda t: "", "is empty"),
    "header": (lambda t: t.replace("experiment", "experimnt", 1),
               "header column 2 is 'experimnt', expected 'experiment'"),
    "extra_field": (lambda t: t.replace("\nsingle,", "\n,single,"),  # pandas: an index
                    f"row 1 has {len(COLUMNS) + 1} fields, expected {len(COLUMNS)}"),
    "open_quote": (lambda t: t + '"single,\n', "does not parse (unexpected end of data)"),
    "binary": (lambda t: t[:40] + "\udcff\n", "does not parse (not UTF-8 text)"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_results_csv_not_whole_is_refused(tmp_path, capsys, case):
    root, job = _one_job(tmp_path)
    assert len(load_runs([root]).frame) == 4  # what to_csv wrote (quotes, newlines) parses
    damage, problem = BROKEN[case]
    csv = job / "results.csv"
    csv.write_text(damage(csv.read_text()), errors="surrogateescape")
    assert main([str(root), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: {csv}: {problem}; {RERUN.format(job=job)}"]
    assert not (tmp_path / "r").exists()


def test_finished_job_without_results_csv_is_refused(tmp_path, capsys):
    root, job = _one_job(tmp_path)
    (job / "results.csv").unlink()
    assert main([str(root), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: finished job {job} has no results.csv (deleted?); rerun it: delete "
        f"{job}/metrics.json and rerun its sweep command"]
    (job / "metrics.json").write_text('{"rows": 4')  # cut short
    with pytest.raises(AnalysisError, match=r"metrics.json does not parse \(.*\); rerun the"):
        load_runs([root])
    (job / "metrics.json").write_text('{"rows": "4"}')
    with pytest.raises(AnalysisError, match=r"metrics.json records no row count \(rows='4'\)"):
        load_runs([root])


def test_which_directories_are_jobs(tmp_path):
    """Finished: metrics.json with rows (zero rows too); unfinished: no metrics.json yet, even
    with results.csv (the job is between the two); a trained module's run (metrics.json, no
    rows) and directories nested in a job are no jobs; each job is loaded once."""
    root, job = _one_job(tmp_path)
    _write_job(root, 1, [])  # a skipped pair: header only, rows 0
    _write_job(root, 2, [_row(task="single", seed=0, rewarded_acc=0.5)])
    (root / "2" / "metrics.json").unlink()  # still logging, or killed there
    (root / "3").mkdir()
    (root / "3" / "metrics.json").write_text(json.dumps({"rewarded": [3], "seed": 0}))
    for nested in ("module_a", "wandb/offline-run-x/files", ".hydra"):
        (job / nested).mkdir(parents=True)
        (job / nested / "config.yaml").write_text("seed: 0\n")
    (job / "module_a" / "metrics.json").write_text("not json")
    runs = load_runs([root])
    assert runs.jobs == [job, root / "1"] and runs.skipped == [root / "2"]
    assert len(runs.frame) == 4 and runs.summary() == (
        "found 2 job(s) with results.csv (4 rows), skipped 1 unfinished (no metrics.json)")
    again = load_runs([root, job, root])  # a job below two given directories counts once
    assert again.jobs == runs.jobs and len(again.frame) == 4 and again.skipped == runs.skipped
    _write_job(tmp_path / "empty", 0, [])
    with pytest.raises(AnalysisError, match="empty: no finished job with rows below it; pass"):
        load_runs([tmp_path / "empty"])


def test_circuits_header_is_accepted(tmp_path):
    from maxent_lightning.files import write_text
    from maxent_lightning.tasks.circuits import ID_COLUMNS

    assert CIRCUIT_KEYS == ID_COLUMNS
    job = tmp_path / "circuits"
    job.mkdir()
    rows = [{"task": "circuits", "seed": 0, "num_classes": 10, "analysis": "full", "x": 1.5}]
    frame = pd.DataFrame(rows)
    columns = ID_COLUMNS + [c for c in frame.columns if c not in ID_COLUMNS]  # as the task
    write_text(job / "results.csv", pd.DataFrame(rows, columns=columns).to_csv(index=False))
    (job / "metrics.json").write_text(json.dumps({"rows": 1, "task": "circuits"}))
    assert list(load_runs([job]).frame.analysis) == ["full"]
    (job / "metrics.json").write_text(json.dumps({"rows": 1, "task": "pairwise"}))
    with pytest.raises(AnalysisError, match="header column 10 is 'num_classes', expected 'cardi"):
        load_runs([job])


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_clean_keeps_the_store_and_clean_store_deletes_it(tmp_path):
    def make(*args):
        makefile = Path(__file__).resolve().parents[1] / "Makefile"
        res = subprocess.run(["make", "-s", "-f", str(makefile), "-C", str(tmp_path), *args],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout

    for d in ("outputs/debug/store/x", "multirun/t", "reports/table2", "store/digits/a1",
              "store/digits/b2", "store/mnist/c3"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "reports" / "bench.json").write_text("{}")
    make("clean")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports", "store"]
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["table2"]
    assert make("clean-store").startswith("deleting the module store store/: 3 module dir")
    assert not (tmp_path / "store").exists()
    assert make("clean-store") == "no module store at store/: nothing to delete\n"


def test_figures_drawn_on_processes_equal_those_drawn_here(tmp_path, monkeypatch):
    """Six or more figures are drawn on a process per core: the same files, in order."""

    def specs(where):
        rng = np.random.default_rng(0)
        return [(tmp_path / where / f"c{k}.png", f"fig {k}",
                 [(f"R={{{k}}}", rng.random((3, 3)), 2) for _ in range(2)]) for k in range(6)]

    drawn = {}
    for where, least in (("pool", 6), ("here", 99)):
        monkeypatch.setattr(figures, "POOL_FIGURES", least)
        drawn[where] = figures.drawn(figures._confusion_figure, specs(where))
    names = {w: [[p.relative_to(tmp_path / w) for p in ps] for ps in drawn[w]] for w in drawn}
    assert names["pool"] == names["here"] and names["here"][5] == [Path("c5.png"),
                                                                  Path("c5.pdf")]
    for k in range(6):
        pixels = [plt.imread(tmp_path / w / f"c{k}.png") for w in ("pool", "here")]
        assert np.array_equal(*pixels)
