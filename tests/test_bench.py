"""The benchmark runs end to end on tiny work and reports every path."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_reports_all_paths(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "--modules", "2", "--epochs", "1", "--rounds",
         "1", "--data", "digits", "--skip", "smoke", "sweep", "--out", str(out),
         "--override", "model.hidden=[32]"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("speedup: ") and float(last.split()[1]) > 0
    report = json.loads(out.read_text())
    assert set(report["paths"]) == {"plain loop", "sequential", "family", "dense family"}
    assert all(row["wall_s"] > 0 and row["samples_per_s"] > 0 for row in report["paths"].values())
    assert report["work"]["samples_total"] == 2 * 2 * 1 * report["work"]["train_samples"]
    assert report["pairwise_smoke"] is None
    for name in ("family", "dense family"):  # per-phase epochs: the dense one and the pruned one
        dense, pruned = report["family_phase_epochs"][name]
        assert (dense["round"], dense["alive"], dense["ratio_to_dense"]) == (0, 1.0, 1.0)
        assert pruned["round"] == 1 and 0 < pruned["alive"] < 1 and pruned["ratio_to_dense"] > 0
        assert pruned["target"] == round(pruned["alive"] + 0.2, 3)
    assert "round 1:" in proc.stdout and "target <=" in proc.stdout
    assert report["sgemm_gflops"] > 0 and "GFLOP/s" in proc.stdout


@pytest.mark.slow  # the bench's 20-job sweeps
def test_bench_sweep_section(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "--modules", "1", "--epochs", "1", "--rounds",
         "1", "--data", "digits", "--skip", "plain", "sequential", "dense", "smoke", "extra",
         "--out", str(out), "--override", "model.hidden=[32]", "--sweep-pairs", "2",
         "--sweep-override", "data=digits", "model.hidden=[32]", "trainer.max_epochs=1",
         "imp.rounds=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("sweep speedup: "))
    assert float(line.split()[2]) > 0
    sweep = json.loads(out.read_text())["sweep"]
    for run in ("planned", "family_disabled", "warm"):
        assert sweep[run]["rc"] == 0 and sweep[run]["jobs"] == 4
    assert sweep["planned"]["plan"][0] == "plan: 4 job(s), 0 already finished"
    assert "0 to train" in sweep["warm"]["plan"][1] and sweep["warm_per_job_s"] > 0
    assert sweep["extra_job"] is None  # --skip extra (test_bench_extra_job_cost)


@pytest.mark.slow
def test_bench_extra_job_cost(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "--modules", "1", "--epochs", "1", "--rounds",
         "1", "--data", "digits", "--skip", "plain", "sequential", "dense", "smoke",
         "--out", str(out), "--override", "model.hidden=[32]", "--sweep-pairs", "1",
         "--sweep-override", "data=digits", "model.hidden=[32]", "trainer.max_epochs=1",
         "imp.rounds=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    extra = json.loads(out.read_text())["sweep"]["extra_job"]
    for kind in ("evaluate", "rerun"):
        c = extra[kind]
        assert c["five_s"] > 0 and c["one_s"] > 0
        assert c["per_extra_job_s"] == round((c["five_s"] - c["one_s"]) / 4, 3)
        assert f"an extra warm job ({kind})" in proc.stdout
