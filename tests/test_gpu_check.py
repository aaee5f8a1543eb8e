"""The GPU check (benchmarks/gpu_check.py): per-device rows from a sweep's pass lines, and the
whole check end to end on this CPU (tiny: an MLP on 100 random CIFAR-format images)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def test_per_device_rows_from_pass_lines():
    lines = [
        (1.0, "plan: 9 distinct module(s) in 2 group(s), 0 stored, 9 to train in 3 pass(es)"),
        (5.0, "train: pass 1/3 trained on cuda:1: group 2 of 2 (x), 4 module(s); modules 4/9"),
        (7.0, "train: pass 2/3 trained on cuda:0: group 1 of 2 (y), 3 module(s); modules 7/9"),
        (8.0, "train: pass 3/3 trained on cuda:1: group 1 of 2 (y), 2 module(s); modules 9/9"),
        (9.0, "[HYDRA] Launching 6 jobs locally"),
    ]
    devices, planned = gpu_check.per_device(lines, start=0.5)
    assert planned == {"modules": 9, "passes": 3}
    assert devices == {"cuda:1": {"passes": 2, "modules": 6, "wall_s": 7.5},
                       "cuda:0": {"passes": 1, "modules": 3, "wall_s": 6.5}}
    # a sweep that names no pass devices trained in its launching process before the jobs
    devices, _ = gpu_check.per_device([lines[0], lines[-1]], start=0.5)
    assert devices == {"launching process": {"modules": 9, "passes": 3, "wall_s": 8.5}}


@pytest.mark.slow
def test_gpu_check_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--images", "100",
         "--model", "mlp_shallow", "--modules", "2", "--epochs", "1",
         "--bench-override", "model.hidden=[16]", "--out", str(out), "--override",
         "model=mlp_shallow", "model.hidden=[16]", "imp=none", "cardinality=1", "pair=0",
         "trainer.max_epochs=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    sweep = report["sweep"]
    assert sweep["rc"] == 0 and sweep["jobs"] == 1 and sweep["modules_stored"] == 2
    assert "+experiment=pairwise_cifar10 -m seed=0" in sweep["command"]
    assert sum(row["modules"] for row in sweep["devices"].values()) == 2
    paths = report["family_vs_sequential"]["paths"]
    assert paths["family"]["samples_per_s"] > 0 and paths["sequential"]["samples_per_s"] > 0
    assert "family vs sequential:" in proc.stdout and "headline sweep: 1 job(s)" in proc.stdout
