"""The task registry (``maxent_lightning.tasks``): every task module registered, names found
without importing anything by a built-in name, tasks of your own by import path, and the
dispatcher owning a composition job's start, skip when done and finish."""

import json
import sys

import pandas as pd
import pytest

from maxent_lightning import cli, helptext, planner
from maxent_lightning.config import compose_config
from maxent_lightning.errors import UserError
from maxent_lightning.jobs import Outcome
from maxent_lightning.tasks import TASKS, Task, dispatch, lookup


def test_every_task_module_is_registered_and_listed():
    assert set(TASKS) == set(cli.TASKS) == set(helptext.tasks())  # --help lists the registry
    assert {name for name, t in TASKS.items() if not t.composition} == {"train", "train_pass"}
    assert {name for name, t in TASKS.items() if t.needs is not None} == {
        "single", "pairwise", "complete", "mode_connectivity", "circuits"}
    assert all(lookup(name) is task for name, task in TASKS.items())


def test_the_planner_asks_the_registered_needs(make_cfg):
    cfg = make_cfg("task=complete", "permutation=ordered")
    assert planner.needs(cfg, 4) == [[0], [1], [2], [3]]
    assert planner.needs(make_cfg("task=merge"), 10) is None  # takes no store modules
    cfg.task = "nope"
    assert planner.needs(cfg, 10) is None  # its job fails with its own line


def test_tasks_of_your_own_by_import_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        monkeypatch.delitem(sys.modules, name)  # another test's package of that name
    (tmp_path / "mypkg").mkdir()
    for name, text in (
            ("new", "from maxent_lightning.tasks import Task\n"
                    "def run(job):\n    pass\n"
                    "TASK = Task('mine', run, lambda cfg, n: [[0]])\n"),
            ("old", "def run(cfg):\n    return {'ran': True}\n"),
            ("none", "X = 1\n")):
        (tmp_path / "mypkg" / f"{name}.py").write_text(text)
    new = lookup("mypkg.new")
    assert (new.name, new.composition, new.needs(None, 3)) == ("mine", True, [[0]])
    old = lookup("mypkg.old")  # a module with only run(cfg): it runs as it is
    assert (old.name, old.composition, old.needs) == ("old", False, None)
    assert dispatch(old, None) == {"ran": True}
    with pytest.raises(UserError, match="'mypkg.none' defines no TASK"):
        lookup("mypkg.none")
    with pytest.raises(UserError, match="cannot import task 'nopkg.nope'.*PYTHONPATH"):
        lookup("nopkg.nope")
    with pytest.raises(UserError, match="unknown task 'new'; choose one of: circuits"):
        lookup("new")  # a plain name is a registered task only


def test_the_dispatcher_starts_skips_and_finishes(tmp_path, fast_overrides, capsys):
    calls = []

    def run(job):
        calls.append(job.out)
        row = job.row(class_set="0", merge="none", split="test", rewarded_acc=0.5)
        return Outcome([row], {"answer": 42}, run_name="probe")

    task = Task("probe", run, report=lambda metrics, out: f"probe report: {metrics['rows']} row")
    out = tmp_path / "job"
    cfg = compose_config([*fast_overrides, f"paths.store_dir={tmp_path}/store"], output_dir=out)
    metrics = dispatch(task, cfg)
    assert calls == [out] and "probe report: 1 row" in capsys.readouterr().out
    assert metrics["task"] == "probe" and metrics["answer"] == 42 and metrics["rows"] == 1
    assert json.loads((out / "metrics.json").read_text()) == metrics  # written last
    frame = pd.read_csv(out / "results.csv")
    assert list(frame["task"]) == ["probe"] and list(frame["rewarded_acc"]) == [0.5]
    assert (out / "config.yaml").is_file()
    # the same config again: skipped, the task not run
    assert dispatch(task, cfg) is None
    assert calls == [out] and "skip: probe job already done" in capsys.readouterr().out
