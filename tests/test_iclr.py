"""The ICLR experiments on CIFAR-10 (complete merge, incremental and pairwise mode connectivity,
XE/QME vs ME, width sweep): their grids, each run through the CLI narrowed to small jobs on small
CIFAR-format files, and the width figure and table of the analysis."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from maxent_lightning.compat import hydra_internals
from maxent_lightning.results import COLUMNS
from multirun_analysis import AnalysisError, analyze

NEW = ["complete_cifar10", "mode_connectivity_cifar10", "mode_connectivity_pairwise_cifar10",
       "pairwise_losses_cifar10", "width_cifar10"]
# Every narrowed job: tiny backbones, one epoch.
SMALL = ["-m", "seed=0", "model.width=4", "trainer.max_epochs=1", "logger=none",
         "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]


@pytest.fixture(scope="module")
def expand(compose_job):
    """``expand(name, *cli)``: the jobs (override dicts) of ``+experiment=name -m *cli``."""

    def jobs(name: str, *cli: str) -> list[dict]:
        _, params = compose_job([f"+experiment={name}"])
        overrides = [f"{k}={v}" for k, v in params.items()] + list(cli)
        parsed = OverridesParser.create().parse_overrides(overrides)
        return [dict(o.split("=", 1) for o in job)
                for job in hydra_internals().split_arguments(parsed, None)[0]]

    return jobs


@pytest.mark.parametrize("name", NEW)
def test_iclr_experiments_compose_with_the_cifar_recipe(name, compose_job):
    for model in ("resnet18", "vgg11"):
        cfg, _ = compose_job([f"+experiment={name}", f"model={model}"])
        assert (cfg.data.name, cfg.experiment_name) == ("cifar10", name)
        assert (cfg.trainer.max_epochs, cfg.imp.sparsity, cfg.model.width) == (20, 0.6, 64)


def test_iclr_grids(expand):
    complete = expand("complete_cifar10")
    assert len(complete) == 5 * 2 * 2 * 11  # seeds, models, IMP, ordered + 10 random orders
    assert {j["permutation"] for j in complete} == {"ordered", *map(str, range(10))}
    barriers = expand("mode_connectivity_cifar10")
    assert len(barriers) == 10 and {j["permutation"] for j in barriers} == {"ordered"}
    pairs = expand("mode_connectivity_pairwise_cifar10")
    assert len(pairs) == 5 * 2 * 3 * 10 and {j["cardinality"] for j in pairs} == {"1", "2", "5"}
    losses = expand("pairwise_losses_cifar10")
    assert len(losses) == 5 * 2 * 3 * 3 * 10
    assert {j["loss"] for j in losses} == {"cross_entropy", "quasi_maxent", "maxent"}
    widths = expand("width_cifar10")
    assert len(widths) == 5 * 2 * 4 * 3 * 10
    assert {j["model.width"] for j in widths} == {"8", "16", "32", "64"}
    # narrowed on the command line: one job
    assert len(expand("width_cifar10", "seed=0", "model=resnet18", "model.width=8",
                      "cardinality=1", "pair=0")) == 1


def test_figures_drawn_in_increasing_order_use_it(expand):
    for data in ("fashion_mnist", "har", "mnist5k"):
        assert {j["permutation"] for j in expand(f"mode_connectivity_{data}")} == {"ordered"}
        orders = {j["permutation"] for j in expand(f"complete_{data}")}
        assert orders == {"ordered", *map(str, range(10))}  # Figs 19-21 and Fig 4


# ------------------------------------------------------------------ narrowed runs, real CLI
def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "maxent_lightning", *args,
                           f"paths.log_dir={tmp}", f"paths.store_dir={tmp}/store"],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def run(cifar_root, tmp_path_factory):
    """``run(name, sweep, *overrides)``: ``+experiment=name`` narrowed, into ``tmp/sweep``; the
    modules of every run share one store."""
    tmp = tmp_path_factory.mktemp("iclr")

    def go(name: str, sweep: str, *overrides: str) -> Path:
        res = cli(tmp, f"+experiment={name}", *SMALL, *overrides, f"data.root={cifar_root}",
                  "data.download=false", f"hydra.sweep.dir={tmp}/{sweep}")
        assert res.returncode == 0, res.stderr[-3000:]
        return tmp / sweep

    return go


def frame(job: Path) -> pd.DataFrame:
    data = pd.read_csv(job / "results.csv", dtype={"class_set": str, "permutation": str})
    assert list(data.columns) == COLUMNS and (data["data"] == "cifar10").all()
    assert data["rewarded_acc"].dropna().between(0, 1).all()
    return data


@pytest.mark.slow  # a sweep of barriers
def test_complete_and_incremental_barriers_on_cifar10(run):
    complete = frame(run("complete_cifar10", "complete", "model=resnet18", "imp=none",
                         "permutation=ordered") / "0")
    assert len(complete) == 20 and sorted(set(complete["step"])) == list(range(1, 11))
    assert (complete["permutation"] == "ordered").all() and (complete["width"] == 4).all()
    last = complete[complete["step"] == 10]
    assert set(last["merge"]) == {"weight", "logit"}
    assert (last["class_set"] == "-".join(map(str, range(10)))).all()
    barriers = run("mode_connectivity_cifar10", "mc", "model=resnet18", "imp=none",
                   "path.points=3")
    rows = frame(barriers / "0")
    assert len(rows) == 9 * 3 * 2 and (rows["permutation"] == "ordered").all()  # steps, t, split
    assert rows["barrier_pct"].notna().all()
    summary = json.loads((barriers / "0" / "metrics.json").read_text())
    assert set(summary["max_barrier_pct"]["test"]) == {str(k) for k in range(2, 11)}


def test_pairwise_barriers_on_cifar10_vgg11(run):
    rows = frame(run("mode_connectivity_pairwise_cifar10", "mc_pairs", "model=vgg11", "imp=none",
                     "cardinality=1", "pair=0", "path.points=3") / "0")
    assert len(rows) == 3 * 2 and (rows["cardinality"] == 1).all()
    assert (rows["model"] == "vgg11").all()
    assert rows["permutation"].isna().all() and len(rows["class_set"].iloc[0].split("-")) == 2


def test_losses_on_cifar10_pairwise(run, tmp_path):
    sweep = run("pairwise_losses_cifar10", "losses", "model=resnet18", "loss=cross_entropy,maxent",
                "imp.rounds=1", "cardinality=1", "pair=0")
    losses = [frame(sweep / str(k)) for k in range(2)]
    assert [set(f["loss"]) for f in losses] == [{"cross_entropy"}, {"maxent"}]
    assert all(list(f["merge"]) == ["none", "none", "weight", "logit"] for f in losses)
    analyze([sweep], tmp_path, ["table2"])
    table = (tmp_path / "table2.md").read_text()
    assert "XE" in table and "ME" in table


@pytest.mark.slow  # a width sweep
def test_width_sweep_on_cifar10_and_its_figure(run, tmp_path):
    sweep = run("width_cifar10", "width", "model=resnet18", "model.width=4,8", "imp=none",
                "cardinality=1", "pair=0")
    assert [set(frame(sweep / str(k))["width"]) for k in range(2)] == [{4}, {8}]
    report = subprocess.run([sys.executable, "-m", "multirun_analysis", str(sweep), "--out",
                             str(tmp_path), "--table", "width"],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    assert (tmp_path / "width.png").stat().st_size > 0
    stats = pd.read_csv(tmp_path / "width.csv")
    assert sorted(set(stats["width"])) == [4, 8] and set(stats["merge"]) == {"weight", "logit"}


# ------------------------------------------------------------------ the width analysis
def _width_sweep(root: Path, seeds: int = 2) -> Path:
    """Pairwise jobs at widths 8, 16, 32 (``seeds`` seeds): weight-sum accuracy rises with width
    (0.3 + width / 50, + 0.01 per seed), logit averaging stays at 0.95."""
    for num, (width, seed) in enumerate((w, s) for w in (8, 16, 32) for s in range(seeds)):
        job = root / str(num)
        job.mkdir(parents=True)
        rows = [dict(task="pairwise", experiment="width_cifar10", data="cifar10",
                     model="resnet18", loss="maxent", imp=True, sparsity=0.6, temperature=1.0,
                     seed=seed, cardinality=1, pair=0, class_set="0-8", merge=merge,
                     split="test", width=width,
                     rewarded_acc=(0.95 if merge == "logit" else 0.3 + width / 50 + 0.01 * seed))
                for merge in ("weight", "logit")]
        pd.DataFrame(rows, columns=COLUMNS).to_csv(job / "results.csv", index=False)
        (job / "metrics.json").write_text(json.dumps({"rows": len(rows)}))
    return root


def test_width_table_known_values(tmp_path):
    sweep = _width_sweep(tmp_path / "sweep")
    report = analyze([sweep], tmp_path / "out", ["width"])
    assert {p.name for p in report.written} >= {"width.md", "width.csv", "width.tex", "width.png"}
    stats = pd.read_csv(tmp_path / "out" / "width.csv").set_index(["width", "merge"])
    for width in (8, 16, 32):
        assert stats.loc[(width, "weight"), "mean"] == pytest.approx(0.305 + width / 50)
        assert stats.loc[(width, "weight"), "std"] == pytest.approx(np.std([0, 0.01], ddof=1))
        assert stats.loc[(width, "logit"), "mean"] == pytest.approx(0.95)
        assert stats.loc[(width, "logit"), "n"] == 2
    assert not stats["bold"].any()  # two seeds: too few for Welch's test
    assert "n = 2 per cell (no bold where n < 3" in (tmp_path / "out" / "width.md").read_text()
    _width_sweep(tmp_path / "sweep3", seeds=3)
    analyze([tmp_path / "sweep3"], tmp_path / "out3", ["width"])
    stats = pd.read_csv(tmp_path / "out3" / "width.csv").set_index(["width", "merge"])
    # narrow: logit averaging wins; at width 32 the weight sum ties it (Welch's test)
    assert stats.loc[(8, "logit"), "bold"] and not stats.loc[(8, "weight"), "bold"]
    assert stats.loc[(32, "weight"), "bold"] and stats.loc[(32, "logit"), "bold"]


def test_width_needs_rows_with_a_width(tmp_path):
    sweep = _width_sweep(tmp_path / "sweep")
    for results in sweep.glob("*/results.csv"):
        pd.read_csv(results).assign(width=np.nan).to_csv(results, index=False)
    with pytest.raises(AnalysisError, match="width: no rows for width"):
        analyze([sweep], tmp_path / "out", ["width"])
