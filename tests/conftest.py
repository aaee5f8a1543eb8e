"""Shared fixtures: compose the real Hydra config with test-sized overrides."""

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from maxent_lightning.cli import CONFIG_DIR

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Tiny but real: embedded digits, few epochs, no logger, no progress bar.
FAST = [
    "data=digits",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
    "logger=none",
    "model.hidden=[32]",
]


def compose_config(overrides=(), tmp: Path | None = None, fast: bool = True):
    """The real config composed as the CLI would, with outputs under ``tmp``."""
    GlobalHydra.instance().clear()
    extra = list(FAST if fast else []) + list(overrides)
    if tmp is not None:
        extra += [f"paths.log_dir={tmp}/outputs", f"paths.store_dir={tmp}/store"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=extra, return_hydra_config=False)


@pytest.fixture
def make_cfg(tmp_path):
    def make(*overrides, fast=True):
        return compose_config(overrides, tmp_path, fast)

    return make
