"""Shared fixtures: the real Hydra config composed with test-sized overrides, and tasks run as
Hydra jobs would run them."""

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from maxent_lightning.cli import run_task
from maxent_lightning.config import compose_config
from maxent_lightning.data.cifar_files import write_cifar as write_cifar_files

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


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped where no CUDA GPU is visible."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu and not __import__("torch").cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
        for item in gpu:
            item.add_marker(skip)


def _with_dirs(overrides, tmp, fast: bool) -> list[str]:
    extra = list(FAST if fast else []) + list(overrides)
    if tmp is not None:
        extra += [f"paths.log_dir={tmp}/outputs", f"paths.store_dir={tmp}/store"]
    return extra


@pytest.fixture(scope="session")
def fast_overrides() -> list[str]:
    """The overrides that make a config test-sized."""
    return list(FAST)


@pytest.fixture(scope="session")
def compose_fast():
    """``compose_fast(*overrides, tmp=DIR, fast=True)``: the config, outputs and store under
    ``tmp``, test-sized unless ``fast=False``."""

    def compose(*overrides, tmp=None, fast=True):
        return compose_config(_with_dirs(overrides, tmp, fast))

    return compose


@pytest.fixture
def make_cfg(tmp_path, compose_fast):
    """``make_cfg(*overrides, fast=True)``: a test-sized config writing under ``tmp_path``."""

    def make(*overrides, fast=True):
        return compose_fast(*overrides, tmp=tmp_path, fast=fast)

    return make


@pytest.fixture(scope="session")
def compose_job():
    """``compose_job(overrides, out)``: (job config, sweep params) as Hydra resolves them for a
    job writing to ``out`` (HydraConfig set, the hydra node dropped)."""

    def compose(overrides, out="/tmp/out"):
        cfg = compose_config(list(overrides), output_dir=out, keep_hydra=True)
        params = cfg.hydra.sweeper.params
        sweep = OmegaConf.to_container(params) if params is not None else {}
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg, sweep

    return compose


@pytest.fixture(scope="session")
def run_job():
    """``run_job(out_dir, *overrides, fast=True)``: run the task of the config as a Hydra job
    writing to ``out_dir`` (store under its parent's ``store``); returns what the task returns."""

    def run(out_dir, *overrides, fast=True):
        extra = [*(FAST if fast else []), f"paths.store_dir={out_dir.parent}/store", *overrides]
        return run_task(compose_config(extra, output_dir=out_dir))

    return run


CIFAR100_VAL = 0.5  # cifar_root's CIFAR-100 validation fraction


@pytest.fixture(scope="session")
def write_cifar():
    """``write_cifar(root, which, n_train=6, n_test=4, learnable=False, labels=None,
    val_fraction=0.2)``: CIFAR-10/100 files in the real pickle format (``n_train`` images per
    training batch)."""
    return write_cifar_files


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """A data root with small learnable CIFAR-10 (80 train, 40 test images) and CIFAR-100 (200
    train, 100 test) in the real pickle format. Every class has training and validation
    samples: CIFAR-10's under the default split, CIFAR-100's (two images a class) under
    ``CIFAR100_VAL`` (give it as data.val_fraction)."""
    root = tmp_path_factory.mktemp("cifar")
    write_cifar_files(root, "cifar10", n_train=16, n_test=40, learnable=True)
    write_cifar_files(root, "cifar100", n_train=200, n_test=100, learnable=True,
                 val_fraction=CIFAR100_VAL)
    return root
