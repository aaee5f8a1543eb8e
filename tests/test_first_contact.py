"""What a new user meets first: --help, make, debug configs, progress output, kept overrides."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from maxent_lightning import moduledir
from maxent_lightning.callbacks import EpochLines, PhaseBar, progress_bar
from maxent_lightning.config import compose_config
from maxent_lightning.helptext import experiments, tasks

REPO = Path(__file__).resolve().parents[1]
DEBUG = ("default", "fdr", "overfit", "limit", "profiler")


def cli(*args, cwd):
    """``python -m maxent_lightning ARGS`` with piped output, as in a log file or CI."""
    return subprocess.run([sys.executable, "-m", "maxent_lightning", *args], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, "WANDB_MODE": "offline"},
                          timeout=600)


def test_help_lists_tasks_experiments_and_groups_one_per_line(tmp_path):
    res = cli("--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-1500:]
    lines = res.stdout.splitlines()
    names = {ln.split()[0] for ln in lines if ln.startswith("  ") and ln.strip()}
    assert set(tasks()) <= names and {"train", "pairwise", "train_pass"} <= set(tasks())
    assert set(experiments()) <= names and len(experiments()) >= 30
    assert "  debug      default, fdr, limit, overfit, profiler" in lines
    assert not {"hydra", "paths", "recipe", "experiment"} & names  # internal groups
    assert max(map(len, lines)) <= 100
    one = next(ln for ln in lines if ln.startswith("  single_mnist "))
    assert one.split(None, 1)[1] == "One module per class, each evaluated alone on MNIST"


def test_plain_make_prints_the_targets():
    res = subprocess.run(["make", "-s"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "up to date" not in res.stdout
    targets = [ln for ln in res.stdout.splitlines() if ln and not ln.startswith(" ")]
    assert targets[:3] == ["help", "setup", "run"] and "bench" in targets


@pytest.mark.parametrize("name", DEBUG)
def test_debug_configs_use_their_own_dirs(name):
    cfg = compose_config([f"debug={name}"])
    assert cfg.paths.log_dir == "outputs/debug" and cfg.store.root == "outputs/debug/store"
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 1 and not cfg.logger
    expected = {"default": {"detect_anomaly": True, "max_epochs": 1},
                "fdr": {"fast_dev_run": True},
                "overfit": {"overfit_batches": 3, "max_epochs": 20},
                "limit": {"limit_train_batches": 5, "max_epochs": 3},
                "profiler": {"detect_anomaly": False}}[name]
    assert {k: cfg.trainer[k] for k in expected} == expected
    assert (name == "overfit") == ("early_stopping" not in cfg.callbacks)  # overfit: none
    assert "checkpoint" in cfg.callbacks  # the best validation epoch is kept in every case


def test_debug_wins_over_an_experiment_and_the_command_line_over_debug():
    cfg = compose_config(["+experiment=pairwise_mnist5k", "debug=limit", "logger=csv"])
    assert cfg.task == "pairwise" and cfg.trainer.max_epochs == 3
    assert cfg.store.root == "outputs/debug/store" and "csv" in cfg.logger
    cfg = compose_config(["debug=limit", "trainer.max_epochs=2", "paths.log_dir=elsewhere"])
    assert cfg.trainer.max_epochs == 2 and cfg.store.root == "elsewhere/store"


def test_debug_run_through_the_cli(tmp_path):
    """debug=limit end to end: its own dirs, one line per epoch naming the IMP phase (no
    carriage returns when piped), the overrides kept in .hydra/overrides.yaml."""
    res = cli("data=digits", "model.hidden=[32]", "imp.rounds=1", "debug=limit", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "\r" not in res.stdout
    epochs = [ln for ln in res.stdout.splitlines() if "epoch " in ln]
    assert [ln.split(":")[0] for ln in epochs] == [
        *(f"IMP round 1/1, epoch {e}/3" for e in (1, 2, 3)),
        *(f"final phase, epoch {e}/3" for e in (1, 2, 3))]
    assert all("train/loss" in ln and "val/loss" in ln for ln in epochs)
    runs = list((tmp_path / "outputs" / "debug" / "train" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "module.pt").is_file()
    overrides = yaml.safe_load((runs[0] / ".hydra" / "overrides.yaml").read_text())
    assert overrides == ["data=digits", "model.hidden=[32]", "imp.rounds=1", "debug=limit"]
    assert (runs[0] / ".hydra" / "hydra.yaml").is_file() and not (tmp_path / "store").exists()


def test_job_directories_keep_their_overrides(tmp_path):
    cfg = compose_config(["seed=3", "task=pairwise"], output_dir=tmp_path)
    moduledir.write_config(tmp_path, cfg)
    assert yaml.safe_load((tmp_path / ".hydra" / "overrides.yaml").read_text()) == [
        "seed=3", "task=pairwise"]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["seed"] == 3


def test_progress_bar_is_tqdm_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert isinstance(progress_bar("IMP round 1/2"), PhaseBar)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    bar = progress_bar("final phase")
    assert isinstance(bar, EpochLines) and bar.phase == "final phase"
