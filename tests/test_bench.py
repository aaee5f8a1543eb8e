"""The benchmark runs end to end on tiny work and reports every path."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_reports_all_paths(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "--modules", "2", "--epochs", "1", "--rounds",
         "1", "--data", "digits", "--skip", "smoke", "--out", str(out),
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
