"""Experiment configs compose and expand to the paper's grids; multiruns run end to end
through the real CLI (basic and joblib launchers, submitit local when slow) and resume."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from test_compose import record

from maxent_lightning.cli import TASKS, run_task
from maxent_lightning.compat import hydra_internals
from maxent_lightning.config import CONFIG_DIR, compose_config
from maxent_lightning.errors import UserError
from maxent_lightning.files import read_json
from maxent_lightning.module import save_module
from maxent_lightning.results import COLUMNS

COMPOSITION_TASKS = ("single", "pairwise", "complete", "mode_connectivity", "merge", "eval")
EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def expand(compose_job):
    """``expand(name, *cli)``: the jobs the basic sweeper launches for
    ``+experiment=name -m *cli``."""

    def jobs(name: str, *cli: str) -> list[dict]:
        _, params = compose_job([f"+experiment={name}"])
        overrides = [f"{k}={v}" for k, v in params.items()] + list(cli)
        parsed = OverridesParser.create().parse_overrides(overrides)
        batches = hydra_internals().split_arguments(parsed, None)[0]
        return [dict(o.split("=", 1) for o in job) for job in batches]

    return jobs


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(name, compose_job):
    cfg, params = compose_job([f"+experiment={name}"])
    assert cfg.task in TASKS
    assert cfg.experiment_name == name
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    if cfg.task in COMPOSITION_TASKS:
        assert params, "an experiment expands its protocol grid with hydra.sweeper.params"


def test_recipes_follow_the_paper_per_data_and_model(compose_job):
    cnn, _ = compose_job(["+experiment=pairwise_mnist", "model=lenet"])
    assert (cnn.trainer.max_epochs, cnn.imp.sparsity, cnn.model.dropout) == (15, 0.6, 0.0)
    mlp, _ = compose_job(["+experiment=pairwise_fashion_mnist"])
    assert (mlp.trainer.max_epochs, mlp.imp.sparsity, mlp.loss.temperature) == (20, 0.99, 5.0)
    har, _ = compose_job(["+experiment=single_har", "model=mlp_deep"])
    assert (har.trainer.max_epochs, har.optimizer.lr, har.model.dropout) == (25, 1e-4, 0.0)
    yeast, _ = compose_job(["+experiment=complete_yeast", "model=mlp_deep"])
    assert list(yeast.model.hidden) == [128, 64] and yeast.model.dropout == 0.2
    shallow, _ = compose_job(["+experiment=complete_yeast"])
    assert list(shallow.model.hidden) == [256]
    cli, _ = compose_job(["+experiment=pairwise_mnist", "trainer.max_epochs=2"])
    assert cli.trainer.max_epochs == 2  # the command line wins over the recipe


def test_sweeps_expand_the_protocol_grids(expand):
    jobs = expand("pairwise_cifar10", "seed=0,1,2,3,4")
    assert len(jobs) == 5 * 2 * 2 * 3 * 10  # seeds, models, IMP, |R|, pairs
    assert {j["model"] for j in jobs} == {"resnet18", "vgg11"}
    assert {j["cardinality"] for j in jobs} == {"1", "2", "5"}
    assert len(expand("pairwise_cifar10", "seed=0")) == 120
    assert len(expand("pairwise_mnist")) == 5 * 3 * 3 * 2 * 3 * 10
    assert len(expand("complete_cifar100")) == 5 * 2 * 10
    assert {j["loss.temperature"] for j in expand("temperature_mnist")} == {"1", "3", "5", "7"}
    assert {j["cardinality"] for j in expand("pairwise_yeast")} == {"1", "2"}


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local", "submitit_slurm"])
def test_launchers_compose(launcher):
    cfg = compose_config(["+experiment=pairwise_cifar10", f"hydra/launcher={launcher}"],
                         keep_hydra=True)
    assert cfg.hydra.launcher._target_.startswith("hydra_plugins.")


def test_missing_data_fails_with_one_line(tmp_path, compose_job):
    cfg, _ = compose_job(["+experiment=pairwise_cifar10", f"paths.data_dir={tmp_path}/none",
                          "data.download=false", "logger=none"], out=str(tmp_path / "job"))
    with pytest.raises(UserError) as err:
        run_task(cfg)
    assert "cifar10" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------ the real CLI
SMOKE = ["+experiment=pairwise_mnist5k", "-m", "seed=0", "data=digits", "model=mlp_shallow",
         "loss=maxent", "imp=global", "cardinality=1", "trainer.max_epochs=2", "logger=none",
         "model.hidden=[32]", "trainer.enable_progress_bar=false"]


def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "maxent_lightning", *args, f"paths.log_dir={tmp}",
                           f"paths.store_dir={tmp}/store"], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=600)


def check_sweep(sweep: Path, jobs: int) -> None:
    for k in range(jobs):
        frame = pd.read_csv(sweep / str(k) / "results.csv")
        assert list(frame.columns) == COLUMNS
        assert list(frame["merge"]) == ["none", "none", "weight", "logit"]
        assert (frame.task == "pairwise").all() and (frame.experiment == "pairwise_mnist5k").all()
        assert read_json(sweep / str(k) / "metrics.json")["fingerprint"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    result = cli(tmp, *SMOKE, "pair=0", f"hydra.sweep.dir={tmp}/basic")
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp


def test_pairwise_smoke_multirun_basic_launcher_and_resume(smoke):
    check_sweep(smoke / "basic", 1)
    files = sorted((smoke / "basic" / "0").iterdir())
    before = {p: p.stat().st_mtime_ns for p in files}
    again = cli(smoke, *SMOKE, "pair=0", f"hydra.sweep.dir={smoke}/basic")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "skip" in again.stdout
    def kept(p):  # the log and the run's lock (it records its holder) aside
        return p.suffix != ".log" and p.name != ".run.lock"

    assert {p: p.stat().st_mtime_ns for p in files if kept(p)} == {
        p: t for p, t in before.items() if kept(p)}


def test_pairwise_smoke_multirun_joblib_launcher(smoke):
    # two parallel jobs that reuse the modules of the basic run from the store
    result = cli(smoke, *SMOKE, "pair=0", "merge.kind=both,logit", "hydra/launcher=joblib",
                 "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={smoke}/joblib")
    assert result.returncode == 0, result.stderr[-2000:]
    # the workers are as quiet as the main process: no Lightning tip, no deprecation warning
    assert "litlogger" not in result.stdout + result.stderr
    assert "deprecated" not in result.stdout + result.stderr
    check_sweep(smoke / "joblib", 1)
    logit = pd.read_csv(smoke / "joblib" / "1" / "results.csv")
    assert list(logit["merge"]) == ["none", "none", "logit"]


def test_merge_refuses_modules_of_different_seeds(tmp_path):
    for seed in (0, 1):  # hand-made modules: same everything but θ0
        rec = record(seed, [seed])
        rec.theta0_id = f"theta0-seed{seed}"  # (its fingerprint: of its spec, as recorded)
        save_module(tmp_path / f"m{seed}.pt", rec)
    result = cli(tmp_path, "task=merge", f"checkpoints=[{tmp_path}/m0.pt,{tmp_path}/m1.pt]",
                 "logger=none")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "θ0" in lines[0]


@pytest.mark.slow
def test_pairwise_smoke_multirun_submitit_local(smoke):
    result = cli(smoke, *SMOKE, "pair=0", "hydra/launcher=submitit_local",
                 "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={smoke}/submitit")
    assert result.returncode == 0, result.stderr[-2000:]
    check_sweep(smoke / "submitit", 1)
