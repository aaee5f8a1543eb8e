"""Command line: ``python -m maxent_lightning [overrides]`` (Hydra)."""

import importlib
import logging
import os
import pkgutil
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

from . import tasks
from .errors import UserError

TASKS = tuple(sorted(m.name for m in pkgutil.iter_modules(tasks.__path__)))
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def _quiet_libraries() -> None:
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*Your `IterableDataset` has `__len__`.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_task(cfg: DictConfig):
    if cfg.task not in TASKS:
        raise UserError(f"unknown task '{cfg.task}'; choose one of: {', '.join(TASKS)}")
    return importlib.import_module(f"maxent_lightning.tasks.{cfg.task}").run(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig):
    try:
        return run_task(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def entry() -> None:
    _quiet_libraries()
    main()
