"""The fast launcher's job workers (jobworkers.py): jobs run here and on spawned workers come
back in job order with their returns; a worker that dies fails the job it ran and its queued
jobs run elsewhere; a sweep's jobs on two processes write what one process writes; lines of
several processes never mix."""

import io
import json
import multiprocessing
import os
import re
import signal

import pytest
from hydra.core.utils import JobStatus, run_job
from omegaconf import open_dict
from test_faults import TINY, _signal_when, _start
from test_launcher import multirun_master
from test_planner import cli, fixed

from maxent_lightning import jobworkers, planner
from maxent_lightning.compat import job_context
from maxent_lightning.launcher import SweepComposer

CRASH = "crash_in_worker"


def record_task(cfg):
    """A job: writes which process ran it; in a worker, exits at once when told to."""
    in_worker = multiprocessing.parent_process() is not None
    if in_worker and os.environ.get(CRASH) == str(cfg.pair):
        os._exit(3)
    return {"pair": int(cfg.pair), "pid": os.getpid()}


def run_pool(tmp_path, processes: int, pairs: int):
    args = ["experiment=pairwise_digits", f"hydra.sweep.dir={tmp_path}/sweep", "seed=0",
            "model=mlp_shallow", "loss=maxent", "imp=none", "cardinality=1",
            f"pair={','.join(map(str, range(pairs)))}"]
    with multirun_master(*args) as (master, loader):
        composer = SweepComposer(master, loader)
        jobs = list(enumerate(planner.sweep_jobs(master)))
        context = job_context(None)  # no callbacks

        def compose(idx, overrides):
            cfg = composer.compose(list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.num = cfg.hydra.job.id = idx
            return cfg

        def run_here(cfg):
            return run_job(hydra_context=context, task_function=record_task, config=cfg,
                           job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

        task = jobworkers.task_reference(record_task)
        assert task == ("test_jobworkers", "record_task")
        return jobworkers.JobPool(processes, 1, task).run(jobs, compose, run_here)


def test_jobs_come_back_in_order_from_every_process(tmp_path):
    returns = run_pool(tmp_path, 2, 6)
    assert [r.status for r in returns] == [JobStatus.COMPLETED] * 6
    assert [r.return_value["pair"] for r in returns] == list(range(6))
    pids = {r.return_value["pid"] for r in returns}
    assert os.getpid() in pids and len(pids) == 2  # the worker ran its first jobs
    assert all((tmp_path / "sweep" / str(n)).is_dir() for n in range(6))


def test_a_dead_worker_fails_its_job_and_its_queue_runs_here(tmp_path, monkeypatch):
    monkeypatch.setenv(CRASH, "0")  # the worker's first job (jobworkers.AHEAD go to it first)
    returns = run_pool(tmp_path, 2, 5)
    assert returns[0].status == JobStatus.FAILED
    assert "its job worker stopped (exit code 3)" in str(returns[0]._return_value)
    assert [r.return_value["pair"] for r in returns[1:]] == [1, 2, 3, 4]
    assert {r.return_value["pid"] for r in returns[1:]} == {os.getpid()}


def test_processes_and_task_reference():
    assert jobworkers.job_processes(2, 19) == 1  # too few jobs for a worker to pay
    assert jobworkers.job_processes(2, 20) == 2
    assert jobworkers.job_processes(8, 35) == 3
    assert jobworkers.task_reference(lambda cfg: None) is None

    def local(cfg):
        return None

    assert jobworkers.task_reference(local) is None
    from maxent_lightning import cli as cli_module

    assert jobworkers.task_reference(cli_module.main.__wrapped__) == (cli_module.__name__, "main")


def test_whole_lines_passes_on_complete_lines_only():
    out = io.StringIO()
    writes = []
    out.write = lambda text, w=out.write: (writes.append(text), w(text))[1]
    lines = jobworkers.WholeLines(out)
    print("a line", file=lines)  # print writes the text and its end apart
    lines.write("half")
    assert writes == ["a line\n"]
    assert lines.close_lines() is out and out.getvalue() == "a line\nhalf"


@pytest.mark.slow
def test_a_sweep_on_two_processes_writes_what_one_writes(tmp_path, fast_overrides):
    sweep = [*fixed(tmp_path, fast_overrides), "loss=maxent", "cardinality=1,2",
             "pair=0,1,2,3,4", "seed=0,1"]
    runs = {}
    for workers in (2, 1):
        proc = cli(tmp_path, *sweep, f"sweep.workers={workers}",
                   f"hydra.sweep.dir={tmp_path}/w{workers}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[workers] = proc.stdout + proc.stderr
    assert "Launching 20 jobs locally on 2 processes" in runs[2]
    assert "Launching 20 jobs locally\n" in runs[1] + "\n"
    line = re.compile(r"pairwise \S+ \|R\|=\d pair \d R1=\[[\d, ]+\] R2=\[[\d, ]+\] seed=\d "
                      r"(weight|logit ): rewarded acc [\d.]+, non-rewarded entropy [\d.na]+")
    printed = [s for s in runs[2].splitlines() if "rewarded acc" in s]
    assert len(printed) == 40 and all(line.fullmatch(s) for s in printed)
    for n in range(20):
        metrics = [json.loads((tmp_path / f"w{w}" / str(n) / "metrics.json").read_text())
                   for w in (2, 1)]
        for m in metrics:
            m.pop("wall_s")
        assert metrics[0] == metrics[1]
        assert (tmp_path / "w2" / str(n) / "results.csv").read_text() == \
            (tmp_path / "w1" / str(n) / "results.csv").read_text()


def test_a_signal_stops_every_job_process_with_one_line(tmp_path):
    """SIGTERM while jobs run here and on a worker: one line naming both, no traceback, and
    every process gone (the pipes close); the finished jobs stay finished."""
    args = ["-m", *TINY, "task=pairwise", "cardinality=1", "pair=range(10)", "seed=0,1",
            "sweep_training=jobs", "trainer.max_epochs=6", f"hydra.sweep.dir={tmp_path}/sweep",
            f"paths.store_dir={tmp_path}/store"]
    proc = _start(args, tmp_path)
    rc, err = _signal_when(proc, tmp_path / "sweep" / "0" / "metrics.json", signal.SIGTERM)
    assert rc == 128 + signal.SIGTERM and "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "the other 1 job process(es) stopped" in lines[0], err[-2000:]
    assert json.loads((tmp_path / "sweep" / "0" / "metrics.json").read_text())
    assert not (tmp_path / "sweep" / "19" / "metrics.json").exists()
