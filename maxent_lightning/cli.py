"""Command line: ``python -m maxent_lightning [overrides]`` (Hydra)."""

import importlib
import logging
import os
import pkgutil
import re
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from . import tasks
from .config import CONFIG_DIR, CONFIG_NAME
from .errors import UserError

TASKS = tuple(sorted(m.name for m in pkgutil.iter_modules(tasks.__path__)))


def quiet_libraries() -> None:
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*Your `IterableDataset` has `__len__`.*")
    warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)`? is deprecated.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_task(cfg: DictConfig):
    if cfg.task not in TASKS:
        raise UserError(f"unknown task '{cfg.task}'; choose one of: {', '.join(TASKS)}")
    return importlib.import_module(f"maxent_lightning.tasks.{cfg.task}").run(cfg)


class JobFailed(CompactHydraException):
    """A sweep job's UserError: that job fails, the other jobs of the sweep still run."""


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=CONFIG_NAME)
def main(cfg: DictConfig):
    try:
        return run_task(cfg)
    except UserError as err:
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
        if not sep or key == "hydra" or not (conf / key).is_dir():
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


def entry() -> None:
    quiet_libraries()
    sys.argv[1:] = flags_first(sys.argv[1:])
    problem = unknown_option(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
