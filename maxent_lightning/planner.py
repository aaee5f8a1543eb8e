"""Sweep planner: before a multirun launches, expand its overrides into jobs (Hydra's basic
sweeper logic), compose each job's config (``launcher.SweepComposer``), ask its task which
store modules it needs (``needs(cfg, num_classes)`` in the task module), de-duplicate them by
store fingerprint, count the stored ones, group the missing ones by everything but the
rewarded set and hand each group's missing ones to the store, whose plan (``ModuleStore.passes``:
trainer, members per pass, dense twins) trains them before any job runs. Jobs then only load and
evaluate.

``sweep_training`` chooses where modules are trained: ``sweep`` (here, before launching),
``jobs`` (each job trains what it lacks, as a single run does) or ``passes`` (the sweep becomes
one ``train_pass`` job per training pass, for cluster launchers such as submitit; rerun the
command without it afterwards). ``plan_only=true`` prints the plan and launches nothing.
"""

import functools
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from . import moduledir, pool
from .builders import data_source, named_model
from .compat import hydra_config, hydra_internals, kept_hydra_config, set_hydra_config
from .config import at_the_door
from .errors import UserError
from .files import config_digest, read_json, write_json
from .identity import first_group_key, group_key, job_fingerprint, module_spec, spec_fingerprint
from .jobs import skip_line
from .launcher import PLANNED, SWEEPERS, PlannedJobs, SweepComposer
from .loggers import run_tags
from .modulestore import ModuleStore, TrainingPass
from .phases import imp_used, validate
from .process import RUNNING
from .recipe import Recipe
from .tasks import lookup

log = logging.getLogger(__name__)
STAGES = ("sweep", "jobs", "passes")
PLAN_FILE = "plan.json"
MAX_GROUP_LINES = 6  # groups listed one per line in the printed plan
LARGE_SWEEP = 1000  # jobs from which a sweep says that it is large before planning


@dataclass
class Group:
    """Modules that differ only in their rewarded set (one family), with a job config."""

    cfg: DictConfig
    store: Path
    model: str
    modules: dict = field(default_factory=dict)  # store dir -> rewarded set
    missing: list = field(default_factory=list)  # (rewarded, dir) not stored yet
    training: list[TrainingPass] = field(default_factory=list)  # the store's passes of missing
    deferred: list = field(default_factory=list)  # (rewarded, dir) a twin of another group

    @functools.cached_property
    def recipe(self) -> Recipe:
        """What the store and the trainers read of its config, built once."""
        return Recipe.of(self.cfg)

    @property
    def passes(self) -> int:
        return len(self.training)

    @property
    def chunk(self) -> int:
        return self.training[0].chunk if self.training else 1

    @property
    def twins(self) -> dict:
        """rewarded tuple -> (dense recipe, dir): the dense modules its passes store."""
        return {k: v for p in self.training for k, v in p.twins.items()}


@dataclass
class SweepPlan:
    jobs: int = 0
    finished: int = 0
    launch: PlannedJobs = field(default_factory=PlannedJobs)  # what the sweeper is told
    unplanned: dict = field(default_factory=dict)  # why -> number of jobs
    errors: dict = field(default_factory=dict)  # a job's bad input -> number of jobs
    groups: dict = field(default_factory=dict)  # group key -> Group

    @property
    def modules(self) -> int:
        return sum(len(g.modules) for g in self.groups.values())

    @property
    def missing(self) -> int:
        return sum(len(g.missing) for g in self.groups.values())

    @property
    def passes(self) -> int:
        return sum(g.passes for g in self.groups.values())

    @property
    def twins(self) -> int:
        return sum(len(g.twins) for g in self.groups.values())


# ---------------------------------------------------------------- jobs of a sweep
def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The override list of every job, in launch order, as Hydra's basic sweeper makes it."""
    params = config.hydra.sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    return hydra_internals().split_arguments(parser.parse_overrides(lines), None)[0]


def job_config(compose: SweepComposer, overrides: list[str],
               num: int) -> tuple[DictConfig, Path, str]:
    """Job ``num``'s config as its task gets it (resolved, its runtime facts written in as the
    CLI writes them, hydra node dropped; Hydra's runtime config set as ``run_job`` sets it), its
    output directory and its model name."""
    job = compose.compose(overrides)
    with open_dict(job):
        job.hydra.job.id = job.hydra.job.num = num
    hc = job.hydra
    set_hydra_config(job)  # ${hydra:...} in the sweep directory
    out = Path(str(hc.sweep.dir)) / str(hc.sweep.subdir)
    with read_write(hc.runtime), open_dict(hc.runtime):
        hc.runtime.output_dir = os.path.abspath(out)
    set_hydra_config(job)  # a copy: the job's config keeps no hydra node
    at_the_door(job, hc, multirun=True)
    model = str(job.runtime.model)
    with open_dict(job):
        del job["hydra"]
    OmegaConf.resolve(job)
    return job, out, model


def needs(cfg: DictConfig, num_classes: int) -> list[list[int]] | None:
    """The rewarded sets of the store modules the job of ``cfg`` needs (its task's
    ``needs(cfg, num_classes)``); None for tasks that take none from the store."""
    try:
        need = lookup(cfg.task).needs
    except (UserError, ImportError):
        return None
    return None if need is None else need(cfg, num_classes)


def class_counter():
    """``count(cfg)``: the class count of the job's data set, each data set loaded once (a
    data set that cannot be loaded fails every job that uses it with the same error)."""
    known = {}

    def count(cfg: DictConfig) -> int:
        key = (cfg.data.name, cfg.data.root)
        if key not in known:
            try:
                known[key] = data_source(cfg.data).num_classes
            except UserError as err:
                known[key] = err
        if isinstance(known[key], UserError):
            raise known[key]
        return known[key]

    return count


def plan_sweep(config: DictConfig, check_jobs: bool = True) -> SweepPlan:
    """The plan of the sweep of ``config`` (the multirun's master config)."""
    plan = SweepPlan()
    compose = SweepComposer(config, GlobalHydra.instance().config_loader())
    num_classes = class_counter()
    with kept_hydra_config():  # the master config, as before planning
        for num, overrides in enumerate(sweep_jobs(config)):
            plan.jobs += 1
            try:
                cfg, out, model = job_config(compose, overrides, num)
                plan.launch.composed.add(tuple(overrides))
                validate(cfg)
                fix = "choose another hydra.sweep.dir"
                if check_jobs and moduledir.finished_run(out, job_fingerprint(cfg), "job", fix):
                    skip_finished(plan, cfg, num, overrides, out)
                    plan.finished += 1
                    continue
                sets = needs(cfg, num_classes(cfg))
            except UserError as err:  # the job itself reports it when it runs
                sets, why = None, str(err).split(";")[0]
                plan.errors[str(err)] = plan.errors.get(str(err), 0) + 1
            else:
                why = f"task {cfg.task} takes no store modules"
            if sets is None:
                plan.unplanned[why] = plan.unplanned.get(why, 0) + 1
                continue
            add_modules(plan, cfg, sets, model)
    return plan


def skip_finished(plan: SweepPlan, cfg: DictConfig, num: int, overrides: list[str],
                  out: Path) -> None:
    """Job ``num`` is finished: where its task is a composition task (whose job would only
    print its skip line: ``Job.start``), the fast sweeper prints that line instead of
    launching it."""
    task = lookup(cfg.task)
    if task.composition:
        run_tags(cfg)  # as Job.start: bad tags fail the job, finished or not
        line = skip_line(task.name, os.path.abspath(out))
        plan.launch.finished[num] = (tuple(overrides), line)


def add_modules(plan: SweepPlan, cfg: DictConfig, sets: list[list[int]], model: str) -> None:
    spec = module_spec(cfg, [])
    key = group_key(cfg, spec)
    group = plan.groups.get(key)
    if group is None:
        if str(cfg.get("figures", "auto")).lower() == "auto":  # a multirun's modules: no PNGs
            with open_dict(cfg):  # (Hydra's runtime config is not set while the sweep trains)
                cfg.figures = False
        group = plan.groups[key] = Group(cfg, Path(cfg.store.root), model)
    for rewarded in sets:
        spec["rewarded"] = sorted(int(c) for c in rewarded)
        directory = group.store / spec["data"]["name"] / spec_fingerprint(spec)
        group.modules.setdefault(directory, spec["rewarded"])


def check_store(plan: SweepPlan, twins: bool = True) -> None:
    """Fill in each group's missing modules and the store's passes that train them; with
    ``twins``, an IMP group's passes also store the dense modules its round 0 yields."""
    for group in plan.groups.values():
        store = ModuleStore(group.store)
        group.missing = [(r, d) for d, r in group.modules.items() if store.check(d) is not None]
    if twins:
        pair_twins(plan)
    for group in plan.groups.values():
        if group.missing and not group.training:
            group.training = ModuleStore(group.store).passes(group.recipe, group.missing)


def pair_twins(plan: SweepPlan) -> None:
    """A dense module whose training starts as the IMP round 0 of a module that the sweep
    trains, or is its start (``identity.first_group_key``: same settings but the epochs), is
    trained by the IMP group's passes on that round's stack row (the store decides which:
    ``ModuleStore.passes``) instead of apart: it moves from its group's missing modules to its
    deferred ones."""
    by_first = {}
    for g in plan.groups.values():
        if g.missing:
            by_first.setdefault(first_group_key(g.cfg), []).append(g)
    for groups in by_first.values():
        source = next((g for g in groups if imp_used(g.cfg.imp)), None)
        dense = [g for g in groups if not imp_used(g.cfg.imp)]
        if source is None or not dense:
            continue
        source.training = ModuleStore(source.store).passes(
            source.recipe, source.missing, [(g.recipe, g.missing) for g in dense])
        paired = {d for _, d in source.twins.values()}
        for g in dense:
            g.deferred = [(r, d) for r, d in g.missing if d in paired]
            g.missing = [(r, d) for r, d in g.missing if d not in paired]


def warn_if_large(jobs: int) -> None:
    """A sweep of ``LARGE_SWEEP`` jobs or more says so before it is planned."""
    if jobs >= LARGE_SWEEP:
        print(f"plan: warning: a large sweep of {jobs:,} jobs (planning alone takes minutes; "
              "plan_only=true prints the plan alone, docs/scaling.md spreads "
              "the training over GPUs or a cluster)", flush=True)


def describe(plan: SweepPlan) -> str:
    """The plan in a few lines."""
    lines = [f"plan: {plan.jobs} job(s), {plan.finished} already finished"]
    lines += [f"plan: {n} job(s) not planned: {why}" for why, n in plan.unplanned.items()]
    stored = plan.modules - plan.missing - plan.twins
    lines.append(f"plan: {plan.modules} distinct module(s) in {len(plan.groups)} group(s), "
                 f"{stored} stored, {plan.missing} to train in {plan.passes} pass(es)")
    if plan.twins:
        lines.append(f"plan: {plan.twins} dense module(s) trained with the IMP round 0 of "
                     "modules above (one training: their first epochs are that round's)")
    todo = [g for g in plan.groups.values() if g.missing]
    for g in todo[:MAX_GROUP_LINES]:
        lines.append(f"plan:   {g.cfg.data.name} {g.model} {g.cfg.loss.targets} "
                     f"imp={'on' if g.cfg.imp.enabled else 'off'} seed={g.cfg.seed}: "
                     f"{len(g.missing)} of {len(g.modules)} to train in {g.passes} pass(es) of "
                     f"up to {g.chunk}{f', {len(g.twins)} dense twins' if g.twins else ''}")
    if len(todo) > MAX_GROUP_LINES:
        lines.append(f"plan:   ... and {len(todo) - MAX_GROUP_LINES} more group(s)")
    return "\n".join(lines)


def works(plan: SweepPlan) -> list[pool.Work]:
    """Every group's passes as the pool's work, numbered in plan order."""
    todo = [g for g in plan.groups.values() if g.training]
    out = []
    for k, g in enumerate(todo, 1):
        label = (f"{g.cfg.loss.targets} {g.model}{'' if imp_used(g.cfg.imp) else ' dense'} "
                 f"seed={g.cfg.seed}")
        epochs = pool.module_epochs(g.cfg)
        out += [pool.Work(len(out) + i, k, len(todo), label, g.model, g.store, p,
                          epochs * len(p.members) + pool.twin_epochs(g.cfg, p.twins))
                for i, p in enumerate(g.training, 1)]
    return out


def sweep_devices(config: DictConfig) -> list[str]:
    """The devices of the sweep's training workers (``pool.pool_devices``)."""
    import torch

    trainer = config.get("trainer") or {}
    return pool.pool_devices(trainer.get("accelerator", "auto"), trainer.get("devices", 1),
                             torch.cuda.device_count(), (config.get("sweep") or {}).get("workers"))


def train(plan: SweepPlan, devices: list[str] | None = None) -> None:
    """Train every group's passes on one worker per device (``pool.run``; default: here, on
    the device the store planned), then have the store train any dense twin that its IMP
    module did not yield (e.g. resumed after round 0). A failed pass is one warning line: the
    jobs that need its modules fail alone."""
    work = works(plan)
    if work:
        devices = devices or [work[0].p.device]
        running = hydra_config()
        hydra = OmegaConf.create({"hydra": running}) if running is not None else None
        for line in pool.run(work, devices, hydra=hydra):
            print(f"warning: {line}; the jobs that need its modules will fail", file=sys.stderr)
    for g in plan.groups.values():
        if g.deferred:
            with named_model(g.model):
                ModuleStore(g.store).get_many(g.recipe, [r for r, _ in g.deferred])


# ---------------------------------------------------------------- training passes as jobs
def pass_records(plan: SweepPlan) -> list[dict]:
    """One record per training pass: the resolved job config and its rewarded sets."""
    records = []
    for g in plan.groups.values():
        cfg = OmegaConf.to_container(g.cfg)
        cfg["store"]["root"] = str(g.store.resolve())
        records += [{"config": cfg, "model": g.model, "rewarded": [r for r, _ in p.members]}
                    for p in g.training]
    return records


def as_passes(config: DictConfig, plan: SweepPlan) -> None:
    """Turn the sweep into one ``train_pass`` job per pass (in ``passes/<n>`` of the sweep
    directory), so that a cluster launcher runs them as its jobs."""
    sweep_dir = Path(config.hydra.sweep.dir)
    path = write_json(sweep_dir / PLAN_FILE, {"passes": pass_records(plan)})
    digest = config_digest(read_json(path))  # each job checks the file it reads against it
    n = max(plan.passes, 1)
    with read_write(config), open_dict(config):
        config.hydra.sweeper.params = {}
        config.hydra.overrides.task = [
            "task=train_pass", f"+train_pass.plan={(sweep_dir / PLAN_FILE).resolve()}",
            f"+train_pass.index={','.join(map(str, range(n)))}",
            f"+train_pass.digest='{digest}'",
            "hydra.sweep.subdir=passes/${hydra.job.num}"]


class SweepPlanner(Callback):
    """Hydra callback (conf/hydra/default.yaml): plans a multirun and trains
    the modules its jobs need before the launcher starts them."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        stage, only = str(config.get("sweep_training", "sweep")), bool(config.get("plan_only"))
        if stage not in STAGES:
            print(f"error: sweep_training={stage} must be one of: {', '.join(STAGES)}",
                  file=sys.stderr)
            sys.exit(2)
        PLANNED.pop(str(config.hydra.sweep.dir), None)  # (what an earlier plan found)
        if (stage == "jobs" and not only) or config.hydra.sweeper._target_ not in SWEEPERS \
                or config.get("task") == "train_pass" or hydra_internals() is None:
            return
        try:
            warn_if_large(len(sweep_jobs(config)))
            plan = plan_sweep(config)
            if plan.jobs and sum(plan.errors.values()) == plan.jobs:  # no job could run
                first, count = next(iter(plan.errors.items()))
                raise UserError(f"all {plan.jobs} job(s) of the sweep have bad input "
                                f"({count} this one): {first}")
            check_store(plan, twins=stage != "passes")  # pass jobs train no twins
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except Exception as err:  # Hydra would only warn; the jobs still train what they lack
            if only:
                raise
            log.warning("sweep planning failed (%s: %s); each job trains the modules it lacks",
                        type(err).__name__, err)
            return
        devices = None
        if plan.groups or plan.finished or only:
            lines = [describe(plan)]
            if stage == "sweep" and plan.passes:
                try:
                    devices = sweep_devices(config)
                except UserError as err:
                    print(f"error: {err}", file=sys.stderr)
                    sys.exit(2)
                n = min(len(devices), plan.passes)
                threads = pool.threads_per_worker(n) if n > 1 else None
                lines.append(pool.describe(works(plan), devices, threads))
            print("\n".join(lines), flush=True)
        if only:
            print("plan_only=true: nothing launched")
            sys.exit(0)
        if stage != "passes":  # the fast sweeper launches only the unfinished jobs
            PLANNED[str(config.hydra.sweep.dir)] = plan.launch
        if stage == "passes":
            as_passes(config, plan)
            print(f"plan: launching the {plan.passes} training pass(es) as jobs in "
                  f"{config.hydra.sweep.dir}/passes; rerun without sweep_training=passes to "
                  "run the sweep's jobs")
        elif plan.missing:
            # an interrupt now says that no job ran (cli.interrupted_line)
            RUNNING.update(job=0, out=f"{config.hydra.sweep.dir}, training its modules first")
            try:
                train(plan, devices)
            except UserError as err:  # e.g. a diverged module: the jobs needing it fail alone
                print(f"warning: {err}; the jobs that need it will fail", file=sys.stderr)
