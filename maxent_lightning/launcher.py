"""Fast local multirun (the default: ``hydra/sweeper=fast``, ``hydra/launcher=fast``).

Hydra's basic sweeper composes every job's config once to validate the batch and its basic
launcher composes it again to run the job, each a full composition (defaults list, config
files, schema merges: about half a second for this project's configs). The jobs of a sweep
mostly differ in plain values (``seed``, ``pair``) and share a few sets of config-group
overrides (``model=lenet``). ``SweepComposer`` composes once per distinct set of group
overrides (the real ``load_sweep_config``) and builds each job's config from a copy of it, with
the job's value overrides applied by Hydra's own override step and the fields Hydra sets after
that step (``hydra.overrides``, ``hydra.job.override_dirname``, ``hydra.runtime``) set as Hydra
sets them: the job configs equal Hydra's (tests/test_launcher.py).

``FastSweeper`` is Hydra's basic sweeper (same job expansion and batches) that validates a
batch through the composer; ``FastLauncher`` is Hydra's basic launcher (same logs, ``run_job``)
that takes each job's config from it. Hydra instantiates plugins only from the
``hydra_plugins`` package: they live in ``hydra_plugins/maxent_lightning_launcher`` next to
this package, registered by ``register_plugins`` (the CLI) also where that folder is not on
the import path. Other launchers (``hydra/launcher=joblib``,
``submitit_local``) work with the fast sweeper; ``hydra/launcher=basic hydra/sweeper=basic`` is
Hydra's reference. The Hydra internals used here are ``compat``'s: under another Hydra, each
job is composed by Hydra's own ``load_sweep_config`` (as the basic sweeper and launcher do).

A job the sweep planner found finished (``planner.plan_sweep``: its directory holds its
``metrics.json``) is not launched by the fast sweeper, whatever the launcher: the sweeper prints
its skip line (the one the job itself would print) and launches the other jobs in contiguous
runs, each run from its first job's number, so every job keeps its number and directory
(``launch_unfinished``).
"""

import copy
import importlib
import importlib.util
import os
import sys
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from .compat import BASIC_SWEEPER, hydra_internals

PLUGIN_MODULE = "hydra_plugins.maxent_lightning_launcher"
FAST_SWEEPER = f"{PLUGIN_MODULE}.FastSweeper"
SWEEPERS = (BASIC_SWEEPER, FAST_SWEEPER)  # the sweepers whose jobs the planner can expand

# Base compositions per config loader (one per process in the CLI), shared by the planner
# and the sweeper: {loader: {(config name, hydra overrides, group overrides): config}}.
_BASES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@dataclass
class PlannedJobs:
    """What the sweep planner learnt of a multirun's jobs: the overrides of those it composed
    (the sweeper need not compose them again to validate them) and the finished ones (job
    number -> (overrides, skip line)), which the fast sweeper does not launch."""

    composed: set = field(default_factory=set)
    finished: dict = field(default_factory=dict)


PLANNED: dict[str, PlannedJobs] = {}  # per sweep directory (planner.SweepPlanner fills it)


class SweepComposer:
    """The job configs of a multirun whose master config is ``master``, each equal to
    ``loader.load_sweep_config(master, overrides)``, with one real composition per distinct
    set of config-group overrides."""

    def __init__(self, master: DictConfig, loader):
        self.master, self.loader = master, loader
        self.parser = OverridesParser.create(config_loader=loader)
        self.hydra_overrides = tuple(OmegaConf.to_container(master.hydra.overrides.hydra))
        self.config_name = master.hydra.job.config_name
        self.bases = _BASES.setdefault(loader, {})
        self.parsed: dict[str, Override] = {}

    def parse(self, line: str) -> Override:
        if line not in self.parsed:
            self.parsed[line] = self.parser.parse_overrides([line])[0]
        return self.parsed[line]

    def in_composition(self, override: Override) -> bool:
        """Whether ``override`` takes part in composing the defaults list (a config-group
        choice, or the search path), as Hydra's defaults list sorts overrides; the others
        are applied to the composed config."""
        if override.get_key_element() == "hydra.searchpath":
            return True
        return (self.loader.repository.group_exists(override.key_or_group)
                and not isinstance(override.value(), dict))

    def split(self, overrides: Sequence[str]) -> tuple[tuple[str, ...], list[Override]]:
        """(group overrides, the other overrides parsed), each in the given order."""
        parsed = [self.parse(line) for line in overrides]
        groups = tuple(o.input_line for o in parsed if self.in_composition(o))
        return groups, [o for o in parsed if not self.in_composition(o)]

    def base(self, groups: tuple[str, ...]) -> DictConfig:
        """The job config of the group overrides alone (a real composition, kept unchanged)."""
        key = (self.config_name, self.hydra_overrides, groups)
        if key not in self.bases:
            self.bases[key] = self.loader.load_sweep_config(self.master, list(groups))
        return self.bases[key]

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """The config of the job of ``overrides``, as ``load_sweep_config`` composes it (that
        function itself where this Hydra's internals are not those ``compat`` knows)."""
        hydra_ = hydra_internals()
        if hydra_ is None:
            return self.loader.load_sweep_config(self.master, list(overrides))
        parsed = [self.parse(line) for line in overrides]
        groups, values = self.split(overrides)
        base = self.base(groups)
        cfg = copy.deepcopy(base)
        try:  # Hydra's step after composing the defaults: the value overrides, in order
            hydra_.apply_overrides(values, cfg)
        except OmegaConfBaseException as err:  # as load_configuration reports it
            raise ConfigCompositionException().with_traceback(err.__traceback__) from err
        hydra = cfg.hydra  # what Hydra sets after the overrides (_load_configuration_impl)
        hydra.overrides.hydra = [*self.hydra_overrides,
                                 *(o.input_line for o in parsed if o.is_hydra_override())]
        app = [o for o in parsed if not o.is_hydra_override()]
        hydra.overrides.task = [o.input_line for o in app]
        with open_dict(hydra):
            for key in hydra.job.env_copy:
                hydra.job.env_set[key] = os.environ[key]
        hydra.runtime.cwd = os.getcwd()
        names = hydra.job.config.override_dirname
        hydra.job.override_dirname = hydra_.overrides_dirname(
            overrides=app, kv_sep=names.kv_sep, item_sep=names.item_sep,
            exclude_keys=names.exclude_keys)
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        return cfg

    def validate(self, batch: Sequence[Sequence[str]]) -> None:
        """Every job of ``batch`` composes (raises Hydra's error of the first that does not)."""
        for overrides in batch:
            self.compose(list(overrides))


def jobs_line(done: int, total: int, elapsed: float) -> str:
    """The launcher's progress after each job: jobs done / total, elapsed time and ETA."""
    eta = elapsed / done * (total - done) if done else 0.0
    return f"jobs: {done}/{total} done, {clock(elapsed)} elapsed, ETA {clock(eta)}"


def clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour)."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def planned_jobs(config: DictConfig) -> PlannedJobs:
    """What the planner of the multirun of ``config`` learnt of its jobs (nothing unplanned)."""
    return PLANNED.get(str(config.hydra.sweep.dir), PlannedJobs())


def launch_unfinished(launch, batch: Sequence[Sequence[str]], initial_job_idx: int,
                      finished: dict) -> list:
    """``launch(jobs, initial_job_idx)`` (a launcher's) for the jobs of ``batch`` (numbered
    from ``initial_job_idx``) that are not ``finished``, one call per contiguous run of them;
    each finished job's skip line printed in its place. The launched jobs' returns."""
    returns, run, start = [], [], initial_job_idx
    for idx, overrides in enumerate(batch, start=initial_job_idx):
        done = finished.get(idx)
        if done is None or done[0] != tuple(overrides):
            run.append(overrides)
            continue
        if run:
            returns += launch(run, initial_job_idx=start)
        print(done[1], flush=True)
        run, start = [], idx + 1
    if run:
        returns += launch(run, initial_job_idx=start)
    return returns


def register_plugins() -> None:
    """Register the fast sweeper and launcher with Hydra (found by its plugin scan where the
    project's ``hydra_plugins`` folder is on the import path, loaded from it otherwise)."""
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()  # scans the hydra_plugins packages on the path
    try:
        module = importlib.import_module(PLUGIN_MODULE)
    except ImportError:  # e.g. an editable install made before the folder existed
        path = Path(__file__).resolve().parents[1] / PLUGIN_MODULE.replace(".", "/")
        spec = importlib.util.spec_from_file_location(PLUGIN_MODULE, path / "__init__.py")
        if spec is None or not path.is_dir():
            return  # a multirun then names the missing plugin
        module = importlib.util.module_from_spec(spec)
        sys.modules[PLUGIN_MODULE] = module
        spec.loader.exec_module(module)
    for plugin in (module.FastSweeper, module.FastLauncher):
        plugins.register(plugin)
