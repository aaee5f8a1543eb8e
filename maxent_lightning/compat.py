"""The library internals this package leans on, behind one wall: no other module names a private
API of Hydra, Lightning or W&B (tests/test_structure.py).

Each use is checked against the library series it was written for (``HYDRA_SERIES``,
``LIGHTNING_SERIES``; pyproject.toml pins both) and has a public fallback:

- Hydra: the fast sweep composition (``launcher.SweepComposer``) applies value overrides and names
  override directories with ``hydra._internal`` functions, and the planner expands a sweep with
  the basic sweeper's ``split_arguments``. Under another Hydra series, or where one of them is
  missing, ``hydra_internals()`` is None and logs one line: each job is then composed as Hydra's
  basic sweeper and launcher compose it (``load_sweep_config``) and the planner leaves each job
  to train the modules it lacks. Hydra's basic sweeper and launcher themselves (the base classes
  of the fast ones, ``hydra/sweeper=basic``) live in ``hydra._internal.core_plugins``; a job
  worker (``jobworkers``) builds the sweep's callbacks with ``hydra._internal.callbacks``.
- Lightning: the precision names it accepts, how it resolves ``accelerator=auto|gpu``, and the
  W&B logger's init arguments and open run; elsewhere a public equivalent (imported lazily:
  the CLI imports this module without torch).
- W&B: the git fields of a run (``wandb.sdk.lib.gitlib``); elsewhere W&B reads them itself.
"""

import contextlib
import functools
import importlib
import logging
from dataclasses import dataclass

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

HYDRA_SERIES = "1.3"
LIGHTNING_SERIES = "2.6"
CORE_PLUGINS = "hydra._internal.core_plugins"
BASIC_SWEEPER = f"{CORE_PLUGINS}.basic_sweeper.BasicSweeper"  # hydra/sweeper=basic

log = logging.getLogger(__name__)


def series(version: str) -> str:
    """``major.minor`` of a version string."""
    return ".".join(version.split(".")[:2])


def basic_plugins() -> tuple[type, type]:
    """Hydra's basic sweeper and launcher classes, as Hydra's plugin scan left them (the scan
    executes the core plugin modules again: a class taken before it is not Hydra's)."""
    return (importlib.import_module(f"{CORE_PLUGINS}.basic_sweeper").BasicSweeper,
            importlib.import_module(f"{CORE_PLUGINS}.basic_launcher").BasicLauncher)


@dataclass(frozen=True)
class HydraInternals:
    apply_overrides: object  # (overrides, cfg): Hydra's step applying value overrides
    overrides_dirname: object  # (overrides, kv_sep, item_sep, exclude_keys) -> str
    split_arguments: object  # (overrides, max_batch_size) -> batches of job overrides


@functools.cache
def hydra_internals(version: str | None = None) -> HydraInternals | None:
    """Hydra's internals of the fast sweep composition and the planner, or None (one log line)
    where this Hydra (``version``: the installed one) is not ``HYDRA_SERIES`` or lacks one."""
    version = version or hydra.__version__
    why = None
    if series(version) != HYDRA_SERIES:
        why = f"they were written for Hydra {HYDRA_SERIES}.x"
    else:
        try:
            from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname

            found = HydraInternals(ConfigLoaderImpl._apply_overrides_to_config,
                                   get_overrides_dirname, basic_plugins()[0].split_arguments)
        except (ImportError, AttributeError) as err:
            why = f"its internals differ ({err})"
    if why is not None:
        log.warning("Hydra %s: fast sweep composition off (%s); each job is composed by Hydra's "
                    "basic sweeper and launcher, and trains the modules it lacks", version, why)
        return None
    return found


# Hydra's global runtime config (``HydraConfig``): only the CLI, which writes its facts into the
# job's config (``config.at_the_door``), and these read or set it.
def hydra_config() -> DictConfig | None:
    """The Hydra config of the running job (Hydra's global), or None outside one."""
    return HydraConfig.get() if HydraConfig.initialized() else None


def set_hydra_config(cfg: DictConfig) -> None:
    """Make the ``hydra`` node of ``cfg`` Hydra's global runtime config (``${hydra:...}``
    resolves against it: a notebook's config, a job the planner composes)."""
    HydraConfig.instance().set_config(cfg)


def job_context(config: DictConfig):
    """What Hydra's ``run_job`` takes as its context in a process that runs jobs it did not
    launch (``jobworkers``): the callbacks of ``config.hydra.callbacks``, instantiated as
    Hydra instantiates them (``hydra._internal.callbacks``), no config loader."""
    from hydra._internal.callbacks import Callbacks
    from hydra.types import HydraContext

    return HydraContext(config_loader=None, callbacks=Callbacks(config))


@contextlib.contextmanager
def kept_hydra_config():
    """Hydra's global runtime config as it was before the block (which sets others)."""
    saved = HydraConfig.instance().cfg
    try:
        yield
    finally:
        HydraConfig.instance().cfg = saved


# ---------------------------------------------------------------- Lightning


@functools.cache
def lightning_tested() -> bool:
    """Whether the installed Lightning is ``LIGHTNING_SERIES`` (else one log line, and the
    public fallbacks below)."""
    import lightning

    if series(lightning.__version__) == LIGHTNING_SERIES:
        return True
    log.warning("Lightning %s: maxent_lightning was written for Lightning %s.x; using public "
                "fallbacks for its internals", lightning.__version__, LIGHTNING_SERIES)
    return False


def precisions() -> tuple[tuple, tuple] | None:
    """(precision names, precision integers) ``Trainer(precision=...)`` accepts, or None where
    unknown (Lightning then checks the value itself)."""
    from typing import get_args

    if not lightning_tested():
        return None
    try:
        from lightning.fabric.plugins.precision import precision as P

        return (get_args(P._PRECISION_INPUT_STR) + get_args(P._PRECISION_INPUT_STR_ALIAS),
                get_args(P._PRECISION_INPUT_INT))
    except (ImportError, AttributeError):
        return None


def choose_accelerator(given: str) -> str:
    """The accelerator name ``trainer.accelerator=given`` (auto or gpu) selects on this machine,
    as Lightning resolves it; MisconfigurationException for gpu without CUDA or MPS."""
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    if lightning_tested():
        from lightning.pytorch.trainer.connectors.accelerator_connector import (
            _AcceleratorConnector as C,
        )

        choose = {"auto": getattr(C, "_choose_auto_accelerator", None),
                  "gpu": getattr(C, "_choose_gpu_accelerator_backend", None)}[given]
        if choose is not None:
            return choose()
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    if given == "gpu":
        raise MisconfigurationException("no CUDA or MPS device")
    return "cpu"


def wandb_init_args(logger) -> dict:
    """The ``wandb.init`` arguments a Lightning ``WandbLogger`` keeps (a live dict), or an empty
    dict where Lightning keeps them elsewhere."""
    found = getattr(logger, "_wandb_init", None)
    return found if isinstance(found, dict) else {}


def logger_run(logger):
    """The W&B run a Lightning ``WandbLogger`` has opened, or None."""
    return getattr(logger, "_experiment", None)


def open_logger_run(logger):
    """The logger's run, opened with its own ``wandb.init`` arguments and without Lightning's
    step axis (``trainer/global_step``) where Lightning keeps them as written for; else
    Lightning's ``experiment`` (with that axis)."""
    if logger_run(logger) is None and hasattr(logger, "_wandb_init") and lightning_tested():
        import wandb

        logger._experiment = wandb.init(**logger._wandb_init)
    run = logger_run(logger)
    return logger.experiment if run is None else run


def close_logger_run(logger, exit_code: int = 0) -> None:
    """Finish the logger's run if open (the logger then opens a new one when used again)."""
    run = logger_run(logger)
    if run is not None:
        run.finish(exit_code=exit_code)
        logger._experiment = None


# ---------------------------------------------------------------- W&B


@functools.cache
def wandb_git_settings(directory: str) -> dict:
    """The git fields W&B records of a run started in ``directory`` (repository root, remote
    URL, commit), read once per process: W&B otherwise runs four git commands per run, each a
    fork of the whole (often multi-GB) training process. Empty where W&B cannot read them."""
    try:
        from wandb.sdk.lib.gitlib import GitRepo

        repo = GitRepo(root=directory, lazy=False)
        return {"git_root": repo.root_dir or "", "git_remote_url": repo.remote_url or "",
                "git_commit": repo.last_commit or ""}
    except Exception:  # another W&B version: it reads them itself
        return {}
