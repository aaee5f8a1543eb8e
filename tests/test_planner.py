"""The sweep planner: jobs from the sweep's overrides, modules de-duplicated by store fingerprint,
grouped by everything but the rewarded set, stored ones counted, plan_only, and a real multirun
through the CLI whose jobs only evaluate."""

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from same import assert_same_module

from maxent_lightning import planner
from maxent_lightning.classsets import sample_pairs
from maxent_lightning.config import CONFIG_DIR, CONFIG_NAME
from maxent_lightning.family import train_family

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def master(tmp_path, fixed, sweep):
    """The master config of ``-m *fixed *sweep`` as Hydra hands it to on_multirun_start."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(CONFIG_NAME, overrides=list(fixed), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.overrides.task = list(fixed) + list(sweep)
            cfg.hydra.sweep.dir = str(tmp_path / "sweep")
            cfg.hydra.job.config_name = CONFIG_NAME
        HydraConfig.instance().set_config(cfg)
        yield cfg
    GlobalHydra.instance().clear()


def fixed(tmp_path, fast_overrides, *extra):
    return [*fast_overrides, "task=pairwise", "imp.rounds=1", "trainer.max_epochs=1",
            f"paths.store_dir={tmp_path}/store", *extra]


def test_plan_expands_dedups_and_groups(tmp_path, fast_overrides):
    sweep = ["seed=0,1", "cardinality=1,2", "pair=0,1,2"]
    with master(tmp_path, fixed(tmp_path, fast_overrides), sweep) as cfg:
        jobs = planner.sweep_jobs(cfg)
        plan = planner.plan_sweep(cfg)
    assert len(jobs) == plan.jobs == 2 * 2 * 3
    assert {"seed=1", "cardinality=2", "pair=2"} <= set(jobs[-1])
    per_seed = set()
    for k in (1, 2):
        for pair in sample_pairs(10, k, 10)[:3]:
            per_seed |= {tuple(s) for s in pair}
    assert len(plan.groups) == 2  # one family per seed: same spec but the rewarded set
    assert all(len(g.modules) == len(per_seed) for g in plan.groups.values())
    assert plan.modules == 2 * len(per_seed) and plan.finished == 0 and not plan.unplanned
    planner.check_store(plan)
    assert plan.missing == plan.modules
    assert all(g.chunk >= len(g.missing) for g in plan.groups.values())
    assert plan.passes == 2
    text = planner.describe(plan)
    assert "plan: 12 job(s), 0 already finished" in text
    assert f"{plan.modules} distinct module(s) in 2 group(s), 0 stored" in text


def test_resume_counts_stored_modules(tmp_path, fast_overrides):
    sweep = ["loss=maxent,cross_entropy", "pair=0,1"]
    with master(tmp_path, fixed(tmp_path, fast_overrides), sweep) as cfg:
        plan = planner.plan_sweep(cfg)
        planner.check_store(plan)
        groups = list(plan.groups.values())
        assert len(groups) == 2 and groups[0].passes == 1 and groups[1].passes >= 1
        del plan.groups[next(k for k, g in plan.groups.items() if g is groups[1])]
        planner.train(plan)  # the maxent group only: a sweep killed after its first pass
        again = planner.plan_sweep(cfg)
        planner.check_store(again)
    stored = len(groups[0].modules)
    assert again.modules == stored + len(groups[1].modules)
    assert again.missing == len(groups[1].modules)
    assert f"{stored} stored, {again.missing} to train" in planner.describe(again)


def test_dense_modules_are_trained_with_the_imp_round_0(tmp_path, fast_overrides):
    """imp=none modules (2 epochs) start as round 0 (1 epoch) of their imp=protocol twins: the
    sweep trains them on that round's rows; each is the module a dense training gives, and each
    IMP module the one trained without twins (tests/same.py; dropout included)."""
    sweep = ["imp=protocol,none", "loss=maxent,cross_entropy", "pair=0,1"]
    epochs = ("trainer.max_epochs=2", "imp.round_epochs=1")
    with master(tmp_path, fixed(tmp_path, fast_overrides, *epochs), sweep) as cfg:
        plan = planner.plan_sweep(cfg)
        planner.check_store(plan)
        dense = [g for g in plan.groups.values() if not g.cfg.imp.enabled]
        assert len(dense) == 2 and all(not g.missing and g.deferred for g in dense)
        assert plan.twins == sum(len(g.deferred) for g in dense) == plan.missing
        assert "dense module(s) trained with the IMP round 0" in planner.describe(plan)
        planner.train(plan)
        again = planner.plan_sweep(cfg)
        planner.check_store(again)
        assert again.missing == 0 and again.twins == 0
        for g in plan.groups.values():
            (r, d), *_ = g.deferred or g.missing
            out = tmp_path / f"alone-{g.cfg.loss.targets}-{g.cfg.imp.enabled}"
            alone = train_family(g.cfg, [(r, out)])[0]
            stored, own = assert_same_module(d, out)
            assert stored["stop_epochs"] == own["stop_epochs"] == alone["stop_epochs"]
            assert stored["stop_epochs"] == ([1, 2] if g.cfg.imp.enabled else [2])


def test_unknown_task_and_bad_jobs_are_not_planned(tmp_path, fast_overrides):
    with master(tmp_path, fixed(tmp_path, fast_overrides, "n_pairs=2"), ["pair=0,5"]) as cfg:
        plan = planner.plan_sweep(cfg)
    assert plan.jobs == 2 and sum(plan.unplanned.values()) == 1  # pair=5 fails in its job
    assert "pair=5 must be in 0..1" in next(iter(plan.unplanned))


def cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "maxent_lightning", "-m", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                               "WANDB_MODE": "offline"})


def test_plan_only_prints_and_launches_nothing(tmp_path, fast_overrides):
    proc = cli(tmp_path, *fixed(tmp_path, fast_overrides), "cardinality=1,2", "pair=0,1",
               "plan_only=true", f"hydra.sweep.dir={tmp_path}/sweep")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "plan: 4 job(s), 0 already finished" in proc.stdout
    assert "plan_only=true: nothing launched" in proc.stdout
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "store").exists()


def test_multirun_trains_first_then_jobs_only_evaluate(tmp_path, fast_overrides):
    args = [*fixed(tmp_path, fast_overrides), "cardinality=1", "pair=0,1,2",
            f"hydra.sweep.dir={tmp_path}/sweep"]
    proc = cli(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = proc.stdout + proc.stderr
    assert "plan: 3 job(s), 0 already finished" in log
    launched = log.index("Launching 3 jobs")
    assert log.count("family training:") == 1 and log.index("family training:") < launched
    assert "training" not in log[launched:]  # the jobs found every module stored
    for n in range(3):
        assert (tmp_path / "sweep" / str(n) / "metrics.json").exists()
        assert not list((tmp_path / "sweep" / str(n)).glob("*.png"))  # figures=auto
    modules = list((tmp_path / "store").rglob("module.pt"))
    assert len(modules) == 6 and not list((tmp_path / "store").rglob("*.png"))  # nor modules'
    again = cli(tmp_path, *args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "plan: 3 job(s), 3 already finished" in again.stdout + again.stderr
    for n in range(3):  # the sweeper prints each finished job's skip line, launches none
        assert f"skip: pairwise job already done in {tmp_path}/sweep/{n}\n" in again.stdout
    assert "Launching" not in again.stdout + again.stderr


def test_rerun_launches_only_unfinished_jobs_keeping_their_numbers(tmp_path, fast_overrides):
    """A rerun whose middle job is not finished launches that job alone (joblib here), as
    job 1 in directory 1, with the results it had; the finished ones are reported, not run."""
    args = [*fixed(tmp_path, fast_overrides), "cardinality=1", "pair=0,1,2",
            f"hydra.sweep.dir={tmp_path}/sweep"]
    assert cli(tmp_path, *args).returncode == 0
    sweep = tmp_path / "sweep"
    results = (sweep / "1" / "results.csv").read_text()
    (sweep / "1" / "metrics.json").unlink()  # job 1 interrupted before its end
    kept = {p: p.stat().st_mtime_ns for n in (0, 2) for p in (sweep / str(n)).rglob("*")}
    again = cli(tmp_path, *args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    log = again.stdout + again.stderr
    assert again.returncode == 0, again.stderr[-2000:]
    assert "plan: 3 job(s), 2 already finished" in log
    assert log.count("skip: pairwise job already done") == 2
    assert f"skip: pairwise job already done in {sweep}/2" in again.stdout
    assert "pair 1 R1=" in log and "pair 0 R1=" not in log and "pair 2 R1=" not in log
    assert (sweep / "1" / "results.csv").read_text() == results
    assert (sweep / "1" / "metrics.json").exists()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # nothing of theirs rewritten
