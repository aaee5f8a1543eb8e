"""GPU runs through the real CLI (marker ``gpu``: skipped where torch.cuda.is_available() is
False, see conftest.py): bf16-mixed training of a tiny module, and a sweep's job k evaluated on
GPU k % n (skipped below 2 GPUs)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maxent_lightning.modulefile import load_module

pytestmark = pytest.mark.gpu

TINY = ["data=digits", "trainer.max_epochs=2", "imp.round_epochs=1", "model.hidden=[32]",
        "rewarded=[3]", "logger=csv", "trainer.enable_progress_bar=false"]
# a pairwise sweep on the embedded digits, one job per pair
SWEEP = ["+experiment=pairwise_mnist5k", "-m", "seed=0", "data=digits", "model=mlp_shallow",
         "loss=maxent", "imp=global", "cardinality=1", "trainer.max_epochs=2", "logger=none",
         "model.hidden=[32]", "trainer.enable_progress_bar=false"]


def cli(tmp: Path, *args: str, python: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([*(python or [sys.executable, "-m", "maxent_lightning"]), *args],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=600)


def train(tmp: Path, name: str, *overrides: str) -> tuple[dict, subprocess.CompletedProcess]:
    """metrics.json of TINY trained with ``overrides`` into its own store (``tmp/name``)."""
    res = cli(tmp, *TINY, *overrides, f"hydra.run.dir={tmp}/{name}/run",
              f"paths.store_dir={tmp}/{name}/store")
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((tmp / name / "run" / "metrics.json").read_text()), res


def test_bf16_mixed_trains_on_the_gpu_as_on_the_cpu(tmp_path):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    gpu, res = train(tmp_path, "gpu", "trainer=gpu", "trainer.precision=bf16-mixed")
    assert "on cuda" in res.stdout + res.stderr  # the family trainer's device
    cpu, _ = train(tmp_path, "cpu", "trainer=cpu", "trainer.precision=bf16-mixed")
    record = load_module(tmp_path / "gpu" / "run" / "module.pt")
    assert record.spec["trainer"]["precision"] == "bf16-mixed"  # a spec of its own
    assert gpu["fingerprint"] == cpu["fingerprint"]  # the device is not part of it
    assert all(t.dtype == torch.float32 and t.device.type == "cpu"
               for t in record.state_dict.values() if t.is_floating_point())
    # the same module up to bf16 roundings on other kernels: layerwise masks keep a count
    assert gpu["sparsity"] == pytest.approx(cpu["sparsity"], abs=2e-3)
    assert gpu["stop_epochs"] == cpu["stop_epochs"]
    for key in ("test/rewarded_acc", "test/nonrewarded_entropy", "test/acc"):
        assert gpu[key] == pytest.approx(cpu[key], abs=0.05), key


# Runs the CLI with each job's evaluation recorded: [job number, the device it tested on].
RECORDING = """import json, runpy, sys
from maxent_lightning import jobs
log, sys.argv = sys.argv[1], ['maxent_lightning', *sys.argv[2:]]
run_evaluation, job_num, current = jobs.run_evaluation, jobs.job_num, {}
def numbered(cfg):
    current['num'] = job_num(cfg)
    return current['num']
def recorded(evaluation, data, num_classes, temperature, trainer, *args, **kwargs):
    out = run_evaluation(evaluation, data, num_classes, temperature, trainer, *args, **kwargs)
    with open(log, 'a') as f:
        f.write(json.dumps([current['num'], str(trainer.strategy.root_device)]) + '\\n')
    return out
jobs.run_evaluation, jobs.job_num = recorded, numbered
runpy.run_module('maxent_lightning', run_name='__main__')
"""


def job_devices(tmp: Path, n_jobs: int, *overrides: str) -> dict[int, set[str]]:
    """{job number: devices its evaluations ran on} of a real sweep of ``n_jobs`` jobs."""
    log = tmp / "devices.jsonl"
    res = cli(tmp, *SWEEP, f"pair=range({n_jobs})", *overrides, f"paths.log_dir={tmp}",
              f"paths.store_dir={tmp}/store", f"hydra.sweep.dir={tmp}/sweep",
              python=[sys.executable, "-c", RECORDING, str(log)])
    assert res.returncode == 0, res.stderr[-3000:]
    out: dict[int, set[str]] = {}
    for num, device in map(json.loads, log.read_text().splitlines()):
        out.setdefault(num, set()).add(device)
    return out


def test_sweep_job_k_runs_on_gpu_k_mod_n(tmp_path):
    n = torch.cuda.device_count()
    if n < 2:
        pytest.skip(f"needs 2 GPUs or more ({n} visible)")
    jobs = min(n + 1, 10)  # every GPU, and the first again when there are enough pairs
    assert job_devices(tmp_path, jobs, "trainer=gpu") == {
        k: {f"cuda:{k % n}"} for k in range(jobs)}
