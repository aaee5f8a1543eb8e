"""The fast sweeper and launcher (launcher.py): each job's config equals Hydra's
``load_sweep_config`` (hydra node included), illegal overrides fail as Hydra fails them, and a
real multirun through the CLI runs its jobs with it."""

from contextlib import contextmanager

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict
from test_planner import cli  # the CLI multirun in a subprocess

from maxent_lightning import planner
from maxent_lightning.config import CONFIG_DIR, CONFIG_NAME
from maxent_lightning.launcher import FAST_SWEEPER, SweepComposer, launch_unfinished


@contextmanager
def multirun_master(*overrides):
    """(master config, config loader) of ``-m *overrides``, as Hydra's multirun composes them."""
    setup_globals()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            hydra = GlobalHydra.instance().hydra
            master = hydra.compose_config(CONFIG_NAME, list(overrides),
                                          run_mode=RunMode.MULTIRUN, with_log_configuration=False)
            HydraConfig.instance().set_config(master)
            yield master, GlobalHydra.instance().config_loader()
    finally:
        GlobalHydra.instance().clear()


def as_job(cfg, num: int) -> tuple[dict, dict]:
    """(the whole config unresolved, the task's part resolved) of job ``num``, its hydra job
    numbers and output directory set as the launcher and ``run_job`` set them."""
    with open_dict(cfg):
        cfg.hydra.job.id = cfg.hydra.job.num = num
        cfg.hydra.runtime.output_dir = f"/tmp/sweep/{num}"
    raw = OmegaConf.to_container(cfg, resolve=False)
    HydraConfig.instance().set_config(cfg)
    task = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k])
            else cfg[k] for k in cfg if k != "hydra"}
    return raw, task


def test_job_configs_equal_hydras(tmp_path):
    args = ["experiment=pairwise_digits", f"hydra.sweep.dir={tmp_path}/sweep", "++note=x",
            "model=mlp_shallow,lenet", "loss=maxent,cross_entropy", "seed=0,1",
            "trainer.max_epochs=2,3", "pair=1", "imp=none", "cardinality=1"]
    with multirun_master(*args) as (master, loader):
        assert master.hydra.sweeper._target_ == FAST_SWEEPER
        jobs = planner.sweep_jobs(master)
        assert len(jobs) == 16 and "experiment=pairwise_digits" in jobs[0]
        composer = SweepComposer(master, loader)
        groups = {composer.split(j)[0] for j in jobs}
        assert len(groups) == 4  # model x loss: one real composition each
        for num, overrides in enumerate(jobs):
            fast = as_job(composer.compose(overrides), num)
            ref = as_job(loader.load_sweep_config(master, overrides), num)
            assert fast == ref, overrides
        hydra = composer.compose(jobs[-1]).hydra
        assert list(hydra.overrides.task) == jobs[-1]
        assert f"hydra.sweep.dir={tmp_path}/sweep" in hydra.overrides.hydra
        assert hydra.runtime.choices.model == "lenet" and hydra.runtime.choices.loss == \
            "cross_entropy"
        assert "trainer.max_epochs=3" in hydra.job.override_dirname
        assert len([k for k in composer.bases if k[2] in groups]) == 4


@pytest.mark.parametrize("bad", ["trainer.no_such_key=1,2", "+trainer.max_epochs=3,4",
                                 "model=nope,lenet"])
def test_illegal_overrides_fail_as_in_hydra(bad):
    args = ["experiment=pairwise_digits", "pair=0,1", "seed=0", "imp=none", "cardinality=1",
            "model=mlp_shallow", "loss=maxent", bad]
    with multirun_master(*args) as (master, loader):
        jobs = planner.sweep_jobs(master)
        with pytest.raises(Exception) as ref:
            for overrides in jobs:
                loader.load_sweep_config(master, overrides)
        with pytest.raises(type(ref.value)) as fast:
            SweepComposer(master, loader).validate(jobs)
    assert str(fast.value) == str(ref.value)
    assert isinstance(fast.value, ConfigCompositionException) or "nope" in str(fast.value)


def test_multirun_runs_jobs_as_hydras_launcher(tmp_path, fast_overrides):
    """The default (fast) launcher and Hydra's basic sweeper and launcher write the same job
    configs and results."""
    sweep = [*fast_overrides, "task=pairwise", "imp.rounds=1", "trainer.max_epochs=1",
             f"paths.store_dir={tmp_path}/store", "loss=maxent,cross_entropy", "pair=0,1"]
    fast = cli(tmp_path, *sweep, f"hydra.sweep.dir={tmp_path}/fast")
    assert fast.returncode == 0, fast.stderr[-2000:]
    assert "Launching 4 jobs locally" in fast.stdout + fast.stderr
    ref = cli(tmp_path, *sweep, "hydra/sweeper=basic", "hydra/launcher=basic",
              f"hydra.sweep.dir={tmp_path}/basic")
    assert ref.returncode == 0, ref.stderr[-2000:]
    for n in range(4):
        configs = [OmegaConf.load(tmp_path / which / str(n) / "config.yaml")
                   for which in ("fast", "basic")]
        for cfg in configs:
            del cfg.paths["output_dir"]
        assert configs[0] == configs[1]
        results = [(tmp_path / which / str(n) / "results.csv").read_text()
                   for which in ("fast", "basic")]
        assert results[0] == results[1]


def test_another_hydra_falls_back_to_hydras_own_composition(monkeypatch, caplog):
    """Under a Hydra series compat.py was not written for: one log line, each job composed by
    Hydra's ``load_sweep_config`` (as the basic sweeper and launcher compose it), and the planner
    leaves each job to train what it lacks."""
    from maxent_lightning import compat, launcher

    compat.hydra_internals.cache_clear()
    try:
        with caplog.at_level("WARNING", logger=compat.__name__):
            assert compat.hydra_internals("1.4.0") is None
            assert compat.hydra_internals("1.4.0") is None  # (cached: logged once)
    finally:
        compat.hydra_internals.cache_clear()
    lines = [r.getMessage() for r in caplog.records if r.name == compat.__name__]
    assert len(lines) == 1 and "Hydra 1.4.0" in lines[0] and "basic sweeper" in lines[0]
    assert compat.hydra_internals() is not None  # the installed Hydra: 1.3

    monkeypatch.setattr(launcher, "hydra_internals", lambda: None)
    args = ["experiment=pairwise_digits", "model=mlp_shallow,lenet", "seed=0,1", "pair=1",
            "imp=none", "cardinality=1"]
    with multirun_master(*args) as (master, loader):
        jobs = planner.sweep_jobs(master)
        composer = SweepComposer(master, loader)
        for num, overrides in enumerate(jobs):
            ref = as_job(loader.load_sweep_config(master, overrides), num)
            assert as_job(composer.compose(overrides), num) == ref
        assert composer.bases == {}  # no shared base composition: Hydra's own, per job

        def no_plan(config):
            raise AssertionError("planned under an unknown Hydra")

        monkeypatch.setattr(planner, "hydra_internals", lambda: None)
        monkeypatch.setattr(planner, "plan_sweep", no_plan)
        assert planner.SweepPlanner().on_multirun_start(master) is None


def test_finished_jobs_are_reported_and_the_others_launched_with_their_numbers(capsys):
    jobs = [[f"pair={n}"] for n in range(7)]
    finished = {n: ((f"pair={n}",), f"skip: job {n} done") for n in (0, 2, 3, 6)}
    finished[5] = (("pair=other",), "skip: another job")  # not this job: launched
    calls = []

    def launch(batch, initial_job_idx):
        calls.append((initial_job_idx, [list(j) for j in batch]))
        return [f"ret{initial_job_idx + k}" for k in range(len(batch))]

    returns = launch_unfinished(launch, jobs[2:], 2, finished)  # a batch from job 2 on
    assert calls == [(4, [["pair=4"], ["pair=5"]])]
    assert returns == ["ret4", "ret5"]
    assert capsys.readouterr().out.splitlines() == [
        "skip: job 2 done", "skip: job 3 done", "skip: job 6 done"]
    assert launch_unfinished(launch, jobs, 0, finished) == ["ret1", "ret4", "ret5"]
    assert calls[1:] == [(1, [["pair=1"]]), (4, [["pair=4"], ["pair=5"]])]
    assert launch_unfinished(launch, jobs[:1], 0, finished) == []  # nothing left to launch
    assert len(calls) == 3
