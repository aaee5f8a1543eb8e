"""A real tiny sweep through the CLI with W&B offline: one model name in every run, the analysis
run in the jobs' group with their project and tags, and `make sync` (its documented
``<dir>/**/wandb/offline-run-*``) finds every offline run the sweep, its store and its analysis
wrote."""

import os
import subprocess
import sys
from glob import glob
from pathlib import Path

import pytest
from test_wandb import runs_under

ROOT = Path(__file__).resolve().parents[1]
SYNC_DIRS = ("multirun", "outputs", "store", "reports")  # the Makefile's default SYNC_DIRS


def _run(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res.stdout


@pytest.mark.skipif(subprocess.run(["make", "--version"], capture_output=True).returncode,
                    reason="make not installed")
def test_sweep_runs_one_name_one_group_and_make_sync_finds_them_all(tmp_path):
    sweep = "multirun/table2/pairwise_digits"  # the targets' layout: jobs one level deeper
    _run([sys.executable, "-m", "maxent_lightning", "+experiment=pairwise_digits", "-m",
          "seed=0", "model=mlp_shallow", "loss=maxent", "imp=none", "cardinality=1", "pair=0,1",
          "trainer.max_epochs=1", "model.hidden=[16]", "trainer.accelerator=cpu",
          "logger.wandb.project=p23", "tags=[sweep23]", f"hydra.sweep.dir={sweep}"], tmp_path)
    _run([sys.executable, "-m", "multirun_analysis", sweep, "--out", "reports/table2",
          "--table", "table2", "--wandb"], tmp_path)

    jobs, modules = runs_under(tmp_path / "multirun"), runs_under(tmp_path / "store")
    (analysis,) = runs_under(tmp_path / "reports")
    assert len(jobs) == 2 and len(modules) == 4
    # one name per module: the model config's, in the modules' runs as in the jobs'
    assert all("-mlp_shallow-maxent-dense-" in r["name"] for r in jobs + modules), [
        r["name"] for r in jobs + modules]
    for run in jobs + modules + [analysis]:
        assert (run["group"], run["project"], run["tags"]) == (
            "pairwise_digits", "p23", ["sweep23"]), run["name"]
    assert analysis["job_type"] == "analysis"
    assert analysis["config"]["experiment_name"] == "pairwise_digits"

    written = sorted(str(p.parent.relative_to(tmp_path))
                     for p in tmp_path.rglob("offline-run-*/run-*.wandb"))
    assert len(written) == 7
    documented = sorted(p for d in SYNC_DIRS
                        for p in glob(f"{d}/**/wandb/offline-run-*", root_dir=tmp_path,
                                      recursive=True))
    assert documented == written
    out = _run(["make", "-s", "-f", str(ROOT / "Makefile"), "sync", "DRY=1"], tmp_path)
    count, command = out.strip().splitlines()
    assert count == "7 offline W&B run(s) under multirun outputs store reports"
    assert command.split()[1] == "sync" and sorted(command.split()[2:]) == written


def test_modules_of_a_training_pass_carry_the_sweeps_model_name(tmp_path):
    """sweep_training=passes: the modules are trained by ``task=train_pass`` jobs, whose own model
    choice is the default one; their runs still carry the sweep's model (mlp_deep)."""
    _run([sys.executable, "-m", "maxent_lightning", "+experiment=pairwise_digits", "-m",
          "seed=0", "model=mlp_deep", "model.hidden=[16,8]", "loss=maxent", "imp=none",
          "cardinality=1", "pair=0", "trainer.max_epochs=1", "trainer.accelerator=cpu",
          "sweep_training=passes", "hydra.sweep.dir=multirun/p"], tmp_path)
    modules = runs_under(tmp_path / "store")
    assert sorted(r["name"].split("-")[0] for r in modules) == ["R0", "R8"]
    assert all("-mlp_deep-maxent-dense-" in r["name"] for r in modules), [
        r["name"] for r in modules]
