"""Hydra as its users expect: experiments, debug configs and tasks through the defaults list,
a config composed in a notebook resolves, and the model and data module instantiate from it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from maxent_lightning.cli import TASKS
from maxent_lightning.config import CONFIG_DIR, compose_config, normalize_overrides
from maxent_lightning.data.datamodule import MaxEntDataModule
from maxent_lightning.identity import module_spec

CONF = Path(CONFIG_DIR)


def test_experiment_with_or_without_plus_is_the_same_config():
    assert normalize_overrides(["+experiment=a", "+debug=b", "+x.y=1", "-m"]) == [
        "experiment=a", "debug=b", "+x.y=1", "-m"]
    # (one output directory: by default each would get its own, named by the time)
    plus = compose_config(["+experiment=pairwise_mnist5k", "seed=2"], output_dir="out")
    plain = compose_config(["experiment=pairwise_mnist5k", "seed=2"], output_dir="out")
    assert plus == plain and plain.task == "pairwise" and plain.seed == 2


@pytest.mark.parametrize("order", [0, 1])
def test_debug_wins_over_an_experiment_in_any_order(order):
    args = ["experiment=pairwise_mnist5k", "debug=limit"]
    cfg = compose_config(args if order else args[::-1])
    assert cfg.task == "pairwise" and cfg.experiment_name == "pairwise_mnist5k"
    assert cfg.trainer.max_epochs == 3 and cfg.paths.log_dir == "outputs/debug"


def test_tasks_are_a_config_group():
    assert sorted(p.stem for p in (CONF / "task").glob("*.yaml")) == sorted(TASKS)
    cfg = compose_config(["task=complete"])
    assert cfg.task == "complete" and cfg.experiment_name == "complete"
    assert HydraConfig.get().runtime.choices.task == "complete"
    # an experiment chooses its task; the command line still wins
    assert compose_config(["experiment=single_digits"]).task == "single"
    assert compose_config(["experiment=single_digits", "task=pairwise"]).task == "pairwise"


def test_a_notebook_resolves_an_experiments_recipe_without_an_output_dir():
    cfg = compose_config(["experiment=pairwise_mnist", "model=lenet"])
    assert (cfg.trainer.max_epochs, cfg.imp.sparsity, cfg.loss.temperature) == (15, 0.6, 5.0)
    assert "pairwise_mnist/runs/" in cfg.paths.output_dir


@pytest.mark.parametrize("model, shape", [
    ("mlp_shallow", (1, 8, 8)), ("mlp_deep", (1, 8, 8)), ("lenet", (1, 28, 28)),
    ("resnet18", (3, 32, 32)), ("vgg11", (3, 32, 32))])
def test_the_model_config_instantiates(model, shape):
    cfg = compose_config([f"model={model}", "model.width=4"] if model in ("resnet18", "vgg11")
                         else [f"model={model}"])
    net = instantiate(cfg.model, input_shape=shape, num_classes=10)
    assert net(torch.zeros(2, *shape)).shape == (2, 10)


def test_the_data_config_instantiates_and_loads_in_setup():
    cfg = compose_config(["data=digits", "rewarded=[3,5]", "loss=cross_entropy", "seed=4"])
    dm = instantiate(cfg.data)
    assert isinstance(dm, MaxEntDataModule) and dm.splits is None  # nothing loaded yet
    assert (dm.requested, dm.targets, dm.shuffle_seed) == ([3, 5], "cross_entropy", 4)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == 10 and dm.input_shape == (1, 8, 8)
    assert set(dm.train[2].tolist()) == {3, 5}  # cross-entropy trains on R only


def test_a_modules_spec_keeps_its_recorded_layout():
    """Stored modules keep their fingerprints: the model's temperature inside spec["model"],
    no key of the data module's ``_target_`` in spec["data"]."""
    cfg = compose_config(["data=digits", "loss.temperature=3"], output_dir="unused")
    spec = module_spec(cfg)
    assert spec["model"] == {"_target_": "maxent_lightning.models.MLP", "hidden": [512],
                             "dropout": 0.5, "output_bias": False, "temperature": 5.0}
    assert spec["loss"]["temperature"] == 3
    assert set(spec["data"]) == {"name", "normalize", "batch_size", "val_fraction",
                                 "split_seed", "digest"}
    lenet = module_spec(compose_config(["data=digits", "model=lenet", "protocol=paper"],
                                       output_dir="unused"))
    assert lenet["model"]["temperature"] == 1.0 == lenet["loss"]["temperature"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maxent_lightning", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"})


def test_a_run_keeps_hydras_record_and_a_task_log_and_reruns(tmp_path, fast_overrides):
    run = tmp_path / "run"
    args = [*fast_overrides, "imp.rounds=1", "trainer.max_epochs=1", f"hydra.run.dir={run}",
            f"paths.store_dir={tmp_path}/store"]
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert {"config.yaml", "hydra.yaml", "overrides.yaml", "config.pickle"} <= {
        p.name for p in (run / ".hydra").iterdir()}
    assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["task"] == "train"
    log = (run / "train.log").read_text()  # named after the task, with its summary
    assert "rewarded accuracy" in log and "stored as" in log
    again = cli("--experimental-rerun", str(run / ".hydra" / "config.pickle"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "rewarded accuracy" in again.stdout  # the finished run, reported
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "store"]


def test_plan_only_in_a_single_run_makes_no_directory(tmp_path):
    res = cli("plan_only=true", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "plan_only=true: nothing run" in res.stdout
    assert list(tmp_path.iterdir()) == []
