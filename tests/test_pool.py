"""The sweep's training pool (pool.py): devices per worker, largest passes first, N CPU workers
storing the same modules as one, progress lines, one line per failed pass, the large-sweep
warning; train_pass jobs pinned to GPU ``num % n``; the family honouring trainer.devices."""

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from same import assert_same_module
from test_planner import fixed, master

from maxent_lightning import planner, pool
from maxent_lightning.errors import UserError
from maxent_lightning.family import pick_device
from maxent_lightning.files import config_digest
from maxent_lightning.launcher import jobs_line
from maxent_lightning.moduledir import MODULE
from maxent_lightning.modulestore import TrainingPass
from maxent_lightning.recipe import Recipe
from maxent_lightning.tasks import train_pass


def test_each_gpu_or_the_devices_list_gets_a_worker_else_cpu_workers():
    assert pool.pool_devices("auto", 1, 3) == ["cuda:0", "cuda:1", "cuda:2"]
    assert pool.pool_devices("gpu", [2, 0], 4) == ["cuda:2", "cuda:0"]
    assert pool.pool_devices("cuda", "1,3", 4) == ["cuda:1", "cuda:3"]
    assert pool.pool_devices("auto", OmegaConf.create([1]), 2) == ["cuda:1"]
    assert pool.pool_devices("auto", "auto", 8, workers=2) == ["cuda:0", "cuda:1"]
    assert pool.pool_devices("auto", 1, 0) == ["cpu"] * pool.CPU_WORKERS
    assert pool.pool_devices("cpu", 1, 4, workers=3) == ["cpu", "cpu", "cpu"]
    with pytest.raises(pool.UserError, match="sweep.workers=0"):
        pool.pool_devices("cpu", 1, 0, workers=0)
    assert pool.worker_names(["cpu", "cpu"]) == ["cpu/1", "cpu/2"]
    assert pool.worker_names(["cuda:1"]) == ["cuda:1"]
    assert pool.threads_per_worker(2, cpus=2) == 1 and pool.threads_per_worker(3, cpus=2) == 1
    assert pool.threads_per_worker(2, cpus=16) == 8


def fake_work(index, group, cost, members=2, label="maxent mlp_shallow seed=0"):
    p = TrainingPass(None, "family", [([c], Path(f"/m{index}{c}")) for c in range(members)])
    return pool.Work(index, group, 3, label, "mlp_shallow", Path("/store"), p, cost)


def test_largest_passes_go_first_ties_in_plan_order():
    works = [fake_work(1, 1, 10), fake_work(2, 1, 40), fake_work(3, 2, 10), fake_work(4, 3, 40)]
    assert [w.index for w in pool.largest_first(works)] == [2, 4, 1, 3]
    assert pool.describe(works[:1], ["cpu", "cpu"], None).endswith(
        "10 module-epochs at most, on 1 worker(s): cpu")  # no more workers than passes


def test_the_family_and_train_pass_jobs_take_their_gpu(tmp_path, monkeypatch, compose_fast):
    assert pick_device("cuda", [2]) == torch.device("cuda", 2)
    assert pick_device("gpu", "3,1") == torch.device("cuda", 3)
    assert pick_device("cuda", 1) == torch.device("cuda")
    assert pick_device("cpu", [2]) == torch.device("cpu")
    cfg = compose_fast("trainer.accelerator=auto", f"paths.store_dir={tmp_path}")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(
        {"passes": [{"config": OmegaConf.to_container(cfg, resolve=True), "model": "m",
                     "rewarded": [[1]]}]}))
    seen = []
    monkeypatch.setattr(train_pass.ModuleStore, "get_many",
                        lambda self, c, sets: seen.append(c.trainer.devices) or [tmp_path])
    digest = config_digest(json.loads(plan.read_text()))
    job = OmegaConf.create({"train_pass": {"plan": str(plan), "index": 0, "digest": digest}})
    for count, num, devices in ((4, 5, [1]), (2, 6, [0]), (1, 5, 1)):  # 1: the launcher's GPU
        monkeypatch.setattr(torch.cuda, "device_count", lambda n=count: n)
        monkeypatch.setattr(train_pass, "job_num", lambda cfg, n=num: n)
        train_pass.run(job)
        assert seen.pop() == devices
    # a plan file that is not the sweep's (its configs would be instantiated) is refused
    plan.write_text(plan.read_text().replace('"m"', '"n"'))
    with pytest.raises(UserError, match="not the one this sweep wrote"):
        train_pass.run(job)
    assert seen == []


def test_a_pass_pinned_to_a_gpu_trains_there_and_on_cpu_stays_as_it_is(compose_fast, tmp_path):
    cfg = compose_fast(f"paths.store_dir={tmp_path}")
    p = TrainingPass(Recipe.of(cfg), "family", [([1], tmp_path / "m")])
    assert pool.pinned(p, "cpu") is p
    gpu = pool.pinned(p, "cuda:3")
    assert gpu.device == "cuda:3" and list(gpu.recipe.trainer.devices) == [3]
    assert gpu.recipe.trainer.devices == [3] and p.recipe.trainer.devices != [3]
    assert (gpu.trainer, gpu.members) == (p.trainer, p.members)


def test_progress_says_group_modules_done_elapsed_and_eta(monkeypatch):
    works = [fake_work(1, 1, 30, members=3), fake_work(2, 2, 10, members=1,
                                                         label="cross_entropy lenet seed=4")]
    clock = iter([100.0, 160.0, 180.0])
    monkeypatch.setattr(pool.time, "monotonic", lambda: next(clock))
    progress = pool.Progress(works)
    first = progress.line(works[0], "cpu/2")
    assert first == ("train: pass 1/2 done on cpu/2: group 1 of 3 (maxent mlp_shallow seed=0), "
                     "3 module(s); modules 3/4, 1:00 elapsed, ETA 0:20")
    last = progress.line(works[1], "cuda:1", failed="boom")
    assert last.startswith("train: pass 2/2 failed on cuda:1: group 2 of 3 "
                           "(cross_entropy lenet seed=4)") and "modules 4/4, 1:20" in last
    assert jobs_line(2, 5, 10.0) == "jobs: 2/5 done, 0:10 elapsed, ETA 0:15"


def test_two_cpu_workers_store_the_same_modules_as_one(tmp_path, fast_overrides, caplog):
    sweep = ["loss=maxent,cross_entropy", "pair=0,1"]
    stores = {}
    for n in (2, 1):
        root = tmp_path / f"w{n}"
        with master(root, fixed(root, fast_overrides, "family.chunk_size=2"), sweep) as cfg:
            plan = planner.plan_sweep(cfg)
            planner.check_store(plan, twins=False)
            works = planner.works(plan)
            assert [w.index for w in works] == list(range(1, len(works) + 1))
            assert len(works) > len(plan.groups)  # passes of two
            if n == 2:  # and a pass that cannot write its store: one line, the others train
                (tmp_path / "file").write_text("")
                bad = replace(works[0], index=len(works) + 1, store=tmp_path / "file",
                              p=replace(works[0].p, members=[
                                  (r, tmp_path / "file" / "m") for r, _ in works[0].p.members]))
                works.append(bad)
            with caplog.at_level(logging.INFO):
                failed = pool.run(works, ["cpu"] * n)
        stores[n] = {d.parent.name: d.parent for d in (root / "store").glob(f"digits/*/{MODULE}")}
        if n == 2:
            assert len(failed) == 1 and "failed: NotADirectoryError" in failed[0], failed
            assert f"pass {len(works)} (" in failed[0]
            lines = [r.getMessage() for r in caplog.records if r.name == "maxent_lightning.pool"]
            assert len(lines) == len(works) and all(ln.startswith("train: pass ") for ln in lines)
            assert {"cpu/1", "cpu/2"} >= {ln.split(" on ")[1].split(":")[0] for ln in lines}
            assert any("[cpu/" in r.getMessage() and "family training" in r.getMessage()
                       for r in caplog.records)  # the workers' own log, named by worker
            caplog.clear()
    assert set(stores[1]) == set(stores[2]) and len(stores[1]) == sum(
        len(g.modules) for g in plan.groups.values())
    for name, d in stores[1].items():
        assert_same_module(d, stores[2][name])


def test_a_large_sweep_says_so_and_the_plan_names_its_workers(tmp_path, fast_overrides,
                                                            monkeypatch, capsys):
    monkeypatch.setattr(planner, "LARGE_SWEEP", 4)
    args = fixed(tmp_path, fast_overrides, "plan_only=true", "sweep.workers=2",
                 "family.chunk_size=1")
    with master(tmp_path, args, ["pair=0,1,2,3"]) as cfg, pytest.raises(SystemExit):
        planner.SweepPlanner().on_multirun_start(cfg)
    out = capsys.readouterr().out
    assert out.startswith("plan: warning: a large sweep of 4 jobs")
    assert "on 2 worker(s): cpu/1, cpu/2" in out and "module-epochs at most" in out
    with master(tmp_path, args, ["pair=0,1,2"]) as cfg, pytest.raises(SystemExit):
        planner.SweepPlanner().on_multirun_start(cfg)
    assert "large sweep" not in capsys.readouterr().out
