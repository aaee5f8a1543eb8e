"""The phase plan of one module: every rule both trainers must apply identically.

A module trains in ``rounds + 1`` phases: IMP rounds 0..N-1 (each ends by pruning and rewinding
to θ0), then the final phase. The plan fixes, from the config alone, each phase's epochs and
seeds, the pruning strategy and rate, the prunable tensors and output layer, the early-stopping
rule and what is logged. ``training`` (Lightning, one module) and
``family`` (vectorized, K modules) both execute it.
"""

import ctypes
import os
from collections.abc import Mapping
from dataclasses import dataclass

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import DictConfig, OmegaConf
from torch import nn

from . import masks as M
from .builders import module_spec
from .errors import UserError
from .imp import Strategy, strategy
from .storage import config_digest


def _fast_cuda_check() -> None:
    """Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import; where NVML is absent (CPU-only
    machines) torch then retries loading it on every cuda.is_available(), i.e. every Adam step
    (~0.2 ms). Without NVML torch falls back to the runtime check anyway: drop the variable.
    Done here, after Lightning's import, since both trainers import this module."""
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


_fast_cuda_check()


def imp_rounds(imp: Mapping) -> int:
    """Number of IMP rounds N (0: dense training)."""
    return int(imp["rounds"]) if imp["enabled"] else 0


def imp_used(imp: Mapping) -> bool:
    """Whether IMP prunes (the ``imp`` column of results)."""
    return imp_rounds(imp) > 0


def number(cfg: DictConfig, key: str, kind=int, low=None, high=None, example: str = ""):
    """``cfg[key]`` (a dotted key) as an int or float in [low, high] (high excluded for
    floats), else one-line UserError naming the key and an example."""
    value = OmegaConf.select(cfg, key)
    hint = f", e.g. {key}={example}" if example else ""
    try:
        if isinstance(value, bool) or (kind is int and float(value) != int(value)):
            raise ValueError
        x = kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{key}={value} must be {'an integer' if kind is int else 'a number'}"
                        f"{hint}") from None
    if (low is not None and x < low) or (high is not None and (x > high if kind is int
                                                                else x >= high)):
        bounds = (f">= {low}" if high is None else
                  f"in [{low}, {high}{']' if kind is int else ')'}")
        raise UserError(f"{key}={value} must be {bounds}{hint}")
    return x


def validate(cfg: DictConfig) -> None:
    """Checks that need no data; the rewarded set is checked against the data set later."""
    number(cfg, "seed", int, 0, example="0")
    number(cfg, "trainer.max_epochs", int, 1, example="20")
    if cfg.imp.round_epochs is not None:
        number(cfg, "imp.round_epochs", int, 1, example="20")
    number(cfg, "imp.sparsity", float, 0.0, 1.0, example="0.99")
    number(cfg, "imp.rounds", int, 0, example="2 (0 trains dense)")
    strategy(cfg.imp.scope)
    if not number(cfg, "loss.temperature", float, example="5") > 0:
        raise UserError(f"loss.temperature={cfg.loss.temperature} must be > 0, "
                        "e.g. loss.temperature=5")
    number(cfg, "data.batch_size", int, 1, example="64")
    if not 0 < number(cfg, "data.val_fraction", float, 0.0, 1.0, example="0.2"):
        raise UserError(f"data.val_fraction={cfg.data.val_fraction} must be in (0, 1), "
                        "e.g. data.val_fraction=0.2")
    for key in ("cardinality", "pair", "permutation", "pair_seed"):
        number(cfg, key, int, 0 if key != "cardinality" else 1, example="1")
    number(cfg, "n_pairs", int, 1, example="10")
    if not OmegaConf.is_list(cfg.rewarded):
        raise UserError(f"rewarded={cfg.rewarded} must be a list of classes, e.g. "
                        f"rewarded=[{cfg.rewarded}]")


def tracks_val_metrics(cfg: DictConfig) -> bool:
    """Whether anything reads the per-epoch validation metrics other than the loss: a logger,
    or a callback monitoring one of them."""
    monitored = {str(c.get("monitor", "")) for c in cfg.callbacks.values()}
    return bool(cfg.logger) or any(m.startswith("val/") and m != "val/loss" for m in monitored)


def phase_callbacks(cfg: DictConfig) -> list:
    """Fresh instances of the configured callbacks (early stopping), one set per phase."""
    return [instantiate(c) for c in cfg.callbacks.values()]


class StopRule:
    """Lightning's EarlyStopping decision for one series of values, with the settings of a
    configured EarlyStopping (for trainers that run no Lightning loop)."""

    def __init__(self, callback: EarlyStopping):
        self.callback = callback
        self.best = torch.tensor(torch.inf if callback.mode == "min" else -torch.inf)
        self.wait = 0

    def should_stop(self, current: torch.Tensor) -> bool:
        es, better = self.callback, self.callback.monitor_op
        if es.check_finite and not torch.isfinite(current):
            return True
        if es.stopping_threshold is not None and better(current, es.stopping_threshold):
            return True
        if es.divergence_threshold is not None and better(-current, -es.divergence_threshold):
            return True
        if better(current - es.min_delta, self.best):  # min_delta carries the mode's sign
            self.best, self.wait = current, 0
            return False
        self.wait += 1
        return self.wait >= es.patience


@dataclass(frozen=True)
class Phase:
    """One training phase: IMP round ``round`` (or the final phase when ``final``)."""

    round: int
    epochs: int
    final: bool
    seed: int  # global RNG seed of the phase
    shuffle_seed: int  # order of the training batches

    def begin(self, datamodule) -> None:
        """Seed the phase: the batch order of ``datamodule`` and the global RNGs."""
        datamodule.shuffle_seed = self.shuffle_seed
        L.seed_everything(self.seed, verbose=False)


@dataclass(frozen=True)
class PhasePlan:
    phases: tuple[Phase, ...]
    strategy: Strategy
    rate: float  # K = 1 - (1 - P)^(1/N): fraction of alive weights pruned per round
    prunable: tuple[str, ...]
    output_layer: str
    val_metrics: bool  # validation computes metrics beyond the loss

    @property
    def rounds(self) -> int:
        return len(self.phases) - 1

    def full_masks(self, net: nn.Module) -> M.Masks:
        return M.full_masks(net, list(self.prunable))

    def next_masks(self, params: Mapping[str, torch.Tensor], masks: M.Masks) -> M.Masks:
        """The masks after pruning one round from trained ``params``."""
        return self.strategy.prune(params, masks, self.rate, self.output_layer)

    def label(self, phase: Phase) -> str:
        """How progress output names a phase: 'IMP round 1/2', 'final phase' (after pruning),
        '' for dense training."""
        if not self.rounds:
            return ""
        return "final phase" if phase.final else f"IMP round {phase.round + 1}/{self.rounds}"


def phase_epochs(cfg: DictConfig, final: bool) -> int:
    """E in the final phase; ``imp.round_epochs`` per round, or E // N when that is null."""
    epochs = int(cfg.trainer.max_epochs)
    if final:
        return epochs
    if cfg.imp.round_epochs is None:
        return max(1, epochs // max(int(cfg.imp.rounds), 1))
    return int(cfg.imp.round_epochs)


def first_phase_key(cfg: DictConfig, rewarded) -> str:
    """What decides a module's first phase (IMP round 0, or the whole of a dense training): its
    spec without the IMP settings, with that phase's epochs. An IMP module's round 0 trains
    exactly as the dense module of equal key (same θ0, seeds, batches and, in the family, the
    dropout stream keyed by this): its best weights are that dense module."""
    spec = module_spec(cfg, rewarded)
    del spec["imp"], spec["max_epochs"]
    return config_digest({**spec, "epochs": phase_epochs(cfg, imp_rounds(cfg.imp) == 0)})


def plan(cfg: DictConfig, net: nn.Module) -> PhasePlan:
    """The phase plan of ``cfg`` for a backbone of ``net``'s architecture."""
    validate(cfg)
    rounds, seed = imp_rounds(cfg.imp), int(cfg.seed)
    strat = strategy(cfg.imp.scope)
    prunable = tuple(M.prunable_names(net, include_bias=strat.include_bias))
    phases = tuple(Phase(r, phase_epochs(cfg, r == rounds), r == rounds, seed + r,
                         seed * 1000 + r) for r in range(rounds + 1))
    return PhasePlan(phases, strat, M.per_round_rate(float(cfg.imp.sparsity), rounds), prunable,
                     prunable[-1].rsplit(".", 1)[0], tracks_val_metrics(cfg))
