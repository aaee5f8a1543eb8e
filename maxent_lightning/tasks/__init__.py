"""The task registry and its dispatcher. ``cfg.task`` names a task of ``TASKS`` (``task=pairwise``)
or, for a task of your own, the import path of a module that defines ``TASK = Task(...)``
(``task: mypkg.mytask`` in a task config, docs/extending.md).

A composition task's ``run(job)`` gets a started ``jobs.Job`` and returns an ``Outcome`` (its
rows and summary); ``dispatch`` owns the rest: the job's start, the skip of a finished job, the
finish (results.csv, the loggers, metrics.json last). Where its jobs take modules from the store,
``needs(cfg, num_classes)`` gives their rewarded sets (the sweep planner trains them first).

This package imports every task, hence torch: the CLI imports it only when a task runs, and lists
the tasks for ``--help`` from this folder's files (``helptext``), which a test keeps equal to
``TASKS``."""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from ..errors import UserError
from ..jobs import Job, Outcome
from . import circuits, complete, merge, mode_connectivity, pairwise, single, train, train_pass
from . import eval as evaluate


@dataclass(frozen=True)
class Task:
    """A task: ``run(job) -> Outcome`` for a composition task (``composition=True``: it runs in
    a ``jobs.Job``), else ``run(cfg) -> dict`` (it owns its output directory); ``needs`` where
    its jobs take store modules; ``report(metrics, out)``, a text printed after the finish."""

    name: str
    run: Callable[[Job], Outcome] | Callable[[DictConfig], dict]
    needs: Callable[[DictConfig, int], list[list[int]]] | None = None
    composition: bool = True
    report: Callable[[dict, Path], str] | None = None


TASKS = {task.name: task for task in (
    Task("train", train.run, composition=False),
    Task("train_pass", train_pass.run, composition=False),
    Task("single", single.run, single.needs),
    Task("pairwise", pairwise.run, pairwise.needs),
    Task("complete", complete.run, complete.needs),
    Task("mode_connectivity", mode_connectivity.run, mode_connectivity.needs),
    Task("circuits", circuits.run, circuits.needs, report=circuits.report_text),
    Task("merge", merge.run),
    Task("eval", evaluate.run),
)}


def lookup(name: str) -> Task:
    """The task ``cfg.task`` names: one of ``TASKS``, or the ``TASK`` of the module at that
    import path (a task of your own; a module with only ``run(cfg)`` runs as it is)."""
    name = str(name)
    if name in TASKS:
        return TASKS[name]
    if "." not in name:
        raise UserError(f"unknown task '{name}'; choose one of: {', '.join(sorted(TASKS))}, or "
                        "the import path of a task of your own (docs/extending.md)")
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:  # a task of your own that is not importable
        raise UserError(f"cannot import task '{name}': {err}; put its folder on "
                        "PYTHONPATH") from None
    task = getattr(module, "TASK", None)
    if isinstance(task, Task):
        return task
    if not callable(getattr(module, "run", None)):
        raise UserError(f"task module '{name}' defines no TASK = Task(...); see "
                        "docs/extending.md")
    return Task(name.rsplit(".", 1)[-1], module.run, getattr(module, "needs", None),
                composition=False)


def dispatch(task: Task, cfg: DictConfig):
    """Run ``task`` for ``cfg``: a composition task in its job (None when the job is done: it
    is skipped), its outcome written by the job's finish (the metrics returned); another task
    on its own."""
    if not task.composition:
        return task.run(cfg)
    job = Job.start(cfg, task.name)
    if job is None:
        return None
    outcome = task.run(job)
    metrics = job.finish(outcome.rows, outcome.summary, run_name=outcome.run_name,
                         columns=outcome.columns)
    if task.report is not None:
        print(task.report(metrics, job.out))
    return metrics
