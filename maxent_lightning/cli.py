"""Command line: ``python -m maxent_lightning [overrides]`` (Hydra)."""

import contextlib
import errno
import importlib
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, read_write

# Only what --help, -sc completion and --cfg need: torch and Lightning are imported when a task
# runs (run_task), so the CLI answers at once (tests/test_cli_startup.py).
from . import helptext  # noqa: F401  (the --help resolver)
from .config import CONFIG_DIR, CONFIG_NAME, at_the_door, normalize_overrides
from .errors import UserError
from .launcher import register_plugins
from .process import RUNNING, quiet_libraries
from .rerun import verified_rerun

# The task names, torch-free (the registry, tasks/__init__.py, imports every task: loaded when a
# task runs); tests/test_tasks.py keeps them equal to the registry's.
TASKS = tuple(sorted(helptext.tasks()))


def plan_only(cfg: DictConfig) -> bool:
    """``plan_only=true`` outside a multirun: says so (only a multirun, -m, prints a plan)."""
    if cfg.get("plan_only"):
        print("plan_only=true: nothing run (the plan is printed by a multirun, -m)")
    return bool(cfg.get("plan_only"))


def run_task(cfg: DictConfig):
    """Run the task of ``cfg`` in its output directory (``paths.output_dir``, written in at the
    door: ``main``), claimed for this run alone."""
    if cfg.task not in TASKS and "." not in str(cfg.task):
        raise UserError(f"unknown task '{cfg.task}'; choose one of: {', '.join(TASKS)}, or the "
                        "import path of a task of your own (docs/extending.md)")
    if plan_only(cfg):  # a multirun's planner printed the plan and stopped before
        return None
    # loaded here, as the tasks are (they import torch): --help, -sc and --cfg need none of them
    tasks = importlib.import_module("maxent_lightning.tasks")
    task = tasks.lookup(cfg.task)
    builders = importlib.import_module("maxent_lightning.builders")
    moduledir = importlib.import_module("maxent_lightning.moduledir")
    importlib.import_module("maxent_lightning.cpu").fast_cuda_check()  # Lightning is imported
    # the user's config names the backbone: module files may too
    builders.trust_backbone(builders.backbone_target(cfg))
    with moduledir.claimed(Path(cfg.paths.output_dir)), logged_output():
        return tasks.dispatch(task, cfg)


class Interrupted(BaseException):
    """SIGTERM or SIGINT (kill, timeout, Ctrl-C, a cluster's time limit): the run stops,
    non-zero, saying where to resume."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum, frame) -> None:
    RUNNING["signal"] = signum  # also when a library turns the exception into another one
    raise Interrupted(signum)


def install_interrupts(only_default: bool = False) -> None:
    """SIGTERM and SIGINT raise Interrupted (in this process's main thread); with
    ``only_default`` only where no handler of another tool is set."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        if not only_default or signal.getsignal(sig) in (signal.SIG_DFL,
                                                          signal.default_int_handler):
            signal.signal(sig, _interrupt)



def output_dir_or_exit(path: str, what: str) -> None:
    """Make the run or sweep directory, or stop with one line (before Hydra tries and fails
    with a traceback): a path that is a file, a symlink loop, read-only or on a full disk."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        why = unwritable(path)
    except OSError as err:
        loop = symlink_loop(path)
        why = f"{loop} is a symlink loop" if loop else err.strerror
    if why:
        print(f"error: cannot use {path} as the {what} directory ({why}); choose another "
              f"hydra.{what}.dir", file=sys.stderr)
        sys.exit(2)


def unwritable(directory: str | Path) -> str | None:
    """Why files cannot be made in the existing ``directory`` (root ignores permission bits,
    not a read-only mount), or None."""
    if os.access(directory, os.W_OK | os.X_OK):
        return None
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        return "read-only file system"
    return "read-only for this user: permission denied"


def symlink_loop(path: str | Path) -> Path | None:
    """The symlink in ``path`` (itself or a folder above it) that loops, or None."""
    for p in (Path(path), *Path(path).parents):
        if p.is_symlink():
            try:
                os.stat(p)
            except OSError as err:
                if err.errno == errno.ELOOP:
                    return p
    return None


def path_error(err: BaseException) -> UserError | None:
    """The one-line UserError of a path that cannot be used: an OSError (a file, read-only, a
    full disk) or a symlink loop (pathlib's resolve() raises RuntimeError for one)."""
    loop = None
    if isinstance(err, RuntimeError) and str(err).startswith("Symlink loop from "):
        where = str(err).removeprefix("Symlink loop from ").strip("'\"")
        loop = symlink_loop(where) or where
    elif isinstance(err, OSError):
        loop = symlink_loop(err.filename) if isinstance(err.filename, str) else None
        if loop is None:
            where = f" ({err.filename})" if err.filename else ""
            return UserError(f"cannot write{where}: {err.strerror or err}; choose a writable "
                             "hydra.run.dir / paths.store_dir with free space")
    if loop is None:
        return None
    return UserError(f"{loop} is a symlink loop; remove it or make it point to a directory")


def keep_record(config: DictConfig, output_dir: str | Path) -> None:
    """A directory that already holds Hydra's record of a run (``.hydra/``) keeps it: the job
    about to run there writes none (a rerun of the same config, or one that its task refuses
    as another config's, loses nothing)."""
    subdir = config.hydra.output_subdir
    if subdir is not None and (Path(output_dir) / str(subdir)).exists():
        with read_write(config.hydra):
            config.hydra.output_subdir = None


class OutputDirCheck(Callback):
    """Hydra callback (conf/hydra/default.yaml): checks the output directory first."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if plan_only(config):  # before Hydra makes the run directory: none is left
            sys.exit(0)
        output_dir_or_exit(config.hydra.run.dir, "run")
        keep_record(config, config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if config.get("plan_only"):  # prints the plan, writes nothing: no directory to make
            return
        output_dir_or_exit(config.hydra.sweep.dir, "sweep")


class PlanSweep(Callback):
    """Hydra callback: a multirun's plan (planner.SweepPlanner), imported only when a multirun
    starts (the planner loads torch; a single run, --cfg or --help need none of it)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        planner = importlib.import_module("maxent_lightning.planner")  # (it imports this one)
        planner.SweepPlanner().on_multirun_start(config, **kwargs)


class _LoggedOutput:
    """``sys.stdout`` that also writes each complete line to the job log's file handlers (not
    the console handler: the line is printed once)."""

    def __init__(self, stream, handlers):
        self.stream, self.handlers, self.pending = stream, handlers, ""

    def write(self, text: str) -> int:
        n = self.stream.write(text)
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if line.strip() and "\r" not in line:  # no progress-bar redraws
                record = logging.LogRecord(TASK_LOG, logging.INFO, __file__, 0, line, None, None)
                for handler in self.handlers:
                    handler.handle(record)
        return n

    def __getattr__(self, name):  # isatty, flush, fileno, encoding: the real stream's
        return getattr(self.stream, name)


TASK_LOG = "maxent_lightning.task"


@contextlib.contextmanager
def logged_output():
    """What the task prints (its summary, epoch lines) also goes into the job log
    (``<task>.log``: conf/hydra/default.yaml, hydra.job_logging)."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if not handlers:
        yield
        return
    stream = sys.stdout
    sys.stdout = _LoggedOutput(stream, handlers)
    try:
        yield
    finally:
        sys.stdout = stream


class JobFailed(CompactHydraException):
    """A sweep job's UserError: that job fails, the other jobs of the sweep still run."""


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=CONFIG_NAME)
def main(cfg: DictConfig):
    quiet_libraries()  # also in joblib / submitit workers, which never run entry()
    install_interrupts(only_default=True)  # joblib workers too; submitit keeps its own
    # the door: Hydra's runtime facts into the job's config, once (nothing below reads Hydra's)
    at_the_door(cfg, HydraConfig.get())
    RUNNING.update(job=cfg.runtime.num if cfg.runtime.multirun else None,
                   out=cfg.paths.output_dir)
    try:
        return run_task(cfg)
    except BaseException as err:
        signum = RUNNING.get("signal")
        if signum is not None and not isinstance(err, Interrupted):
            raise Interrupted(signum) from None  # the signal surfaced as another error
        if (problem := path_error(err)) is not None:
            return _fail(problem)
        if isinstance(err, UserError):
            return _fail(err)
        raise


def _fail(err: UserError):
    """A bad input: one line and exit 2, or in a sweep a failed job (the others still run)."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"error: job {hc.job.num}: {err}", file=sys.stderr)
    raise JobFailed(
        f"error: job {hc.job.num} failed: {err} (the other jobs ran; fix it and rerun the "
        "same command: finished jobs are skipped)"
    ) from None


def unknown_option(argv: list[str], config_dir: str = CONFIG_DIR) -> str | None:
    """A one-line message for an override naming a missing config group option
    (``data=nope``), checked before Hydra composes (whose report spans many lines)."""
    if any(a.startswith(("--config-dir", "-cd", "--config-path", "-cp", "hydra.searchpath"))
           for a in argv):
        return None  # options may live in other directories
    conf = Path(config_dir)
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        # hydra/...: Hydra's own options (basic, joblib) are in its config store, not conf/
        if not sep or key.split("/")[0] == "hydra" or not (conf / key).is_dir():
            continue
        for option in value.split(","):
            if re.fullmatch(r"[\w/-]+", option) and option != "null" \
                    and not (conf / key / f"{option}.yaml").is_file():
                choices = ", ".join(sorted(p.stem for p in (conf / key).glob("*.yaml")))
                return f"Could not find '{key}/{option}' (unknown {key} option); choose one of: " \
                       f"{choices}"
    return None


def flags_first(argv: list[str]) -> list[str]:
    """Hydra's parser wants -m/--multirun before the overrides; also accept it after them
    (``python -m maxent_lightning +experiment=X -m seed=0,1``)."""
    flags = [a for a in argv if a in ("-m", "--multirun")]
    return flags + [a for a in argv if a not in flags]


def _lightning_sigterm(err: BaseException) -> bool:
    """Lightning's SIGTERMException (only where a task imported Lightning)."""
    if "lightning.pytorch" not in sys.modules:
        return False
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return isinstance(err, SIGTERMException)


def interrupted_line(signum: int) -> str:
    name = signal.Signals(signum).name
    job, out = RUNNING.get("job"), RUNNING.get("out", "the run directory")
    where = (f"job {job} ({out}) stopped; it and the jobs after it did not run" if job is not None
             else f"{out} stopped")
    if job is not None and RUNNING.get("job_processes"):  # jobworkers: others ran beside it
        where = (f"job {job} ({out}) and the jobs of the other "
                 f"{RUNNING['job_processes'] - 1} job process(es) stopped; they and the jobs "
                 "after them did not run")
    return (f"error: interrupted by {name}: {where}; rerun the same command to resume "
            "(finished jobs are skipped, finished modules and IMP rounds are kept)")


def entry() -> None:
    quiet_libraries()
    RUNNING.clear()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    install_interrupts()
    try:
        _entry()
    finally:  # an in-process caller (tests, notebooks) gets its handlers back
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _entry() -> None:
    sys.argv[1:] = normalize_overrides(flags_first(sys.argv[1:]))
    problem = unknown_option(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    if {"-h", "--help"} & set(sys.argv[1:]) and not any(
            a.startswith("hydra.help") for a in sys.argv[1:]):
        # Hydra's --help lists every config group option first (~1 s of compositions), which
        # this help (conf/hydra/default.yaml: hydra.help.template) does not show
        print(helptext.help_text())
        return
    register_plugins()  # the default multirun sweeper and launcher (launcher.py)
    setup_globals()  # the hydra: and now: resolvers, also for --experimental-rerun (without)
    try:
        rerun_copy = verified_rerun(sys.argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        main()
    except BaseException as err:
        signum = RUNNING.get("signal") or getattr(err, "signum", None)
        if signum is None and isinstance(err, KeyboardInterrupt):
            signum = signal.SIGINT
        elif signum is None and _lightning_sigterm(err):
            signum = signal.SIGTERM
        if signum is None:
            raise
        print(interrupted_line(signum), file=sys.stderr)
        sys.exit(128 + signum)
    finally:
        if rerun_copy:
            os.unlink(rerun_copy)
