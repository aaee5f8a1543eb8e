"""Hydra plugins of maxent_lightning: ``FastSweeper`` and ``FastLauncher``, Hydra's basic sweeper
and launcher with each job's config composed by ``maxent_lightning.launcher.SweepComposer``
(one real composition per distinct set of config-group overrides; under a Hydra whose internals
``maxent_lightning.compat`` does not know, each job's own composition, as the basic ones do).
The sweeper launches no job that the sweep planner found finished (with any launcher: it prints
the job's skip line instead; ``maxent_lightning.launcher.launch_unfinished``).
Configs: ``conf/hydra/{sweeper,launcher}/fast.yaml``, the default of a multirun."""

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, open_dict

from maxent_lightning.cli import keep_record
from maxent_lightning.compat import basic_plugins, hydra_internals
from maxent_lightning.launcher import (
    PlannedJobs,
    SweepComposer,
    jobs_line,
    launch_unfinished,
    planned_jobs,
)

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
    """Hydra's basic launcher (jobs one after another in this process), each job's config
    from a ``SweepComposer``."""

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
        log.info(f"Launching {len(job_overrides)} jobs locally")
        runs, started = [], time.monotonic()
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.composer.compose(list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            keep_record(sweep_config, Path(str(sweep_config.hydra.sweep.dir),
                                           str(sweep_config.hydra.sweep.subdir)))
            runs.append(run_job(hydra_context=self.hydra_context,
                                task_function=self.task_function, config=sweep_config,
                                job_dir_key="hydra.sweep.dir",
                                job_subdir_key="hydra.sweep.subdir"))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            log.info(jobs_line(len(runs), len(job_overrides), time.monotonic() - started))
        return runs
