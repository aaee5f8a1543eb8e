"""Hydra plugins of maxent_lightning: ``FastSweeper`` and ``FastLauncher``, Hydra's basic sweeper
and launcher with each job's config composed by ``maxent_lightning.launcher.SweepComposer``
(one real composition per distinct set of config-group overrides; under a Hydra whose internals
``maxent_lightning.compat`` does not know, each job's own composition, as the basic ones do).
The sweeper launches no job that the sweep planner found finished (with any launcher: it prints
the job's skip line instead; ``maxent_lightning.launcher.launch_unfinished``).
Configs: ``conf/hydra/{sweeper,launcher}/fast.yaml``, the default of a multirun."""

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, open_dict

from maxent_lightning import jobworkers
from maxent_lightning.cli import keep_record
from maxent_lightning.compat import basic_plugins, hydra_internals
from maxent_lightning.errors import UserError
from maxent_lightning.launcher import (
    PlannedJobs,
    SweepComposer,
    jobs_line,
    launch_unfinished,
    planned_jobs,
)
from maxent_lightning.process import RUNNING

log = logging.getLogger(__name__)
BasicSweeper, BasicLauncher = basic_plugins()


class _Unfinished:
    """A launcher as the basic sweeper calls it, launching only the jobs not ``finished``."""

    def __init__(self, launcher, finished: dict):
        self.launcher, self.finished = launcher, finished

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        return launch_unfinished(self.launcher.launch, job_overrides, initial_job_idx,
                                 self.finished)


class FastSweeper(BasicSweeper):
    """Hydra's basic sweeper, validating each batch through a ``SweepComposer`` (shared with
    a ``FastLauncher``) and launching only the jobs the planner did not find finished."""

    planned = PlannedJobs()  # launcher.planned_jobs

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.composer = SweepComposer(config, hydra_context.config_loader)
        if hasattr(self.launcher, "composer"):
            self.launcher.composer = self.composer

    def sweep(self, arguments: list[str]):
        self.planned = planned_jobs(self.config)
        launcher = self.launcher
        if self.planned.finished:
            self.launcher = _Unfinished(launcher, self.planned.finished)
        try:
            return super().sweep(arguments)
        finally:
            self.launcher = launcher

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        if hydra_internals() is None:  # another Hydra: the basic sweeper's own check
            return super().validate_batch_is_legal(batch)
        composed = self.planned.composed  # by the planner: they compose
        self.composer.validate([job for job in batch if tuple(job) not in composed])


class FastLauncher(BasicLauncher):
    """Hydra's basic launcher, each job's config from a ``SweepComposer``; the jobs run in
    this process, and on spawned workers where the sweep has enough of them
    (``maxent_lightning.jobworkers``: as many processes as the training pool's workers)."""

    composer: SweepComposer | None = None

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.hydra_context is not None and self.config is not None
        assert self.task_function is not None
        if self.composer is None:
            self.composer = SweepComposer(self.config, self.hydra_context.config_loader)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = list(enumerate(job_overrides, start=initial_job_idx))
        processes, task = self._processes(len(jobs))
        where = f" on {processes} processes" if processes > 1 else ""
        log.info(f"Launching {len(job_overrides)} jobs locally{where}")
        if processes > 1:
            return self._launch_pool(jobs, processes, task)
        runs, started = [], time.monotonic()
        for idx, overrides in jobs:
            runs.append(self._run_here(self._compose(idx, overrides)))
            log.info(jobs_line(len(runs), len(job_overrides), time.monotonic() - started))
        return runs

    def _processes(self, jobs: int) -> tuple[int, tuple[str, str] | None]:
        """How many processes run ``jobs`` jobs, and where a worker finds the task."""
        task = jobworkers.task_reference(self.task_function)
        if task is None or jobs < 2 * jobworkers.JOBS_PER_WORKER:
            return 1, task
        from maxent_lightning.planner import sweep_devices

        try:
            devices = sweep_devices(self.config)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        return jobworkers.job_processes(len(devices), jobs), task

    def _launch_pool(self, jobs, processes: int, task) -> list[JobReturn]:
        import torch

        from maxent_lightning.pool import threads_per_worker  # (torch: imported by now)

        threads, share = torch.get_num_threads(), threads_per_worker(processes)
        torch.set_num_threads(share)
        RUNNING["job_processes"] = processes  # (read by the CLI's interrupt line)
        try:
            runs = jobworkers.JobPool(processes, share, task).run(jobs, self._compose,
                                                                   self._run_here)
        finally:
            torch.set_num_threads(threads)
        del RUNNING["job_processes"]
        return runs

    def _compose(self, idx: int, overrides: Sequence[str]) -> DictConfig:
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        sweep_config = self.composer.compose(list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        keep_record(sweep_config, Path(str(sweep_config.hydra.sweep.dir),
                                       str(sweep_config.hydra.sweep.subdir)))
        return sweep_config

    def _run_here(self, sweep_config: DictConfig) -> JobReturn:
        ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                      config=sweep_config, job_dir_key="hydra.sweep.dir",
                      job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret
