"""The phase plan of one module: every rule both trainers must apply identically.

A module trains in ``rounds + 1`` phases: IMP rounds 0..N-1 (each ends by pruning and rewinding
to θ0), then the final phase. The plan fixes, from the config alone, each phase's epochs and
seeds, the pruning strategy and rate, the prunable tensors and output layer, the early-stopping
rule and what is logged. ``training`` (Lightning, one module) and
``family`` (vectorized, K modules) both execute it.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from torch import nn

from . import masks as M
from .builders import backbone_target
from .compat import choose_accelerator, precisions
from .composition import logit_weights
from .data.datamodule import check_class_indices
from .errors import UserError
from .imp import Strategy, strategy
from .metrics import METRIC_KEYS
from .results import ORDERED


def imp_rounds(imp: Mapping) -> int:
    """Number of IMP rounds N (0: dense training)."""
    return int(imp["rounds"]) if imp["enabled"] else 0


def imp_used(imp: Mapping) -> bool:
    """Whether IMP prunes (the ``imp`` column of results)."""
    return imp_rounds(imp) > 0


# Seeds (seed, data.split_seed) up to 2^31 - 1: a phase seeds Lightning with seed + round,
# which must stay below 2^32.
SEED_MAX = 2**31 - 1
# Each IMP round trains the module once more (>= 1 epoch): N rounds cost N + 1 trainings. 20
# rounds already reach 99% sparsity at 21% per round; more than 100 is a typo, not a schedule.
MAX_IMP_ROUNDS = 100


def number(cfg: DictConfig, key: str, kind=int, low=None, high=None, example: str = ""):
    """``cfg[key]`` (a dotted key) as a finite int or float in [low, high] (high excluded for
    floats), else one-line UserError naming the key and an example."""
    value = OmegaConf.select(cfg, key)
    hint = f", e.g. {key}={example}" if example else ""
    try:
        if isinstance(value, bool) or (kind is int and float(value) != int(value)):
            raise ValueError
        x = kind(value)
        if not math.isfinite(x):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{key}={value} must be "
                        f"{'an integer' if kind is int else 'a finite number'}{hint}") from None
    if (low is not None and x < low) or (high is not None and (x > high if kind is int
                                                                else x >= high)):
        bounds = (f">= {low}" if high is None else
                  f"in [{low}, {high}{']' if kind is int else ')'}")
        raise UserError(f"{key}={value} must be {bounds}{hint}")
    return x


def positive(cfg: DictConfig, key: str, example: str) -> float:
    """``cfg[key]`` as a finite float > 0, else one-line UserError."""
    x = number(cfg, key, float, example=example)
    if not x > 0:
        raise UserError(f"{key}={OmegaConf.select(cfg, key)} must be > 0, e.g. {key}={example}")
    return x


def flag(cfg: DictConfig, key: str) -> bool:
    """``cfg[key]`` as a bool (a string such as 'abc' would otherwise count as true)."""
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, bool):
        raise UserError(f"{key}={value} must be true or false, e.g. {key}=true")
    return value


def validate(cfg: DictConfig) -> None:
    """Checks that need no data; the rewarded set is checked against the data set later."""
    number(cfg, "seed", int, 0, SEED_MAX, example="0")
    backbone_target(cfg)
    number(cfg, "trainer.max_epochs", int, 1, example="20")
    validate_imp(cfg)
    positive(cfg, "loss.temperature", "5")
    if "lr" in cfg.optimizer:
        positive(cfg, "optimizer.lr", "0.001")
    if "dropout" in cfg.model:  # not every model has dropout (ResNet18)
        number(cfg, "model.dropout", float, 0.0, 1.0, example="0.5")
    number(cfg, "data.batch_size", int, 1, example="64")
    if not 0 < number(cfg, "data.val_fraction", float, 0.0, 1.0, example="0.2"):
        raise UserError(f"data.val_fraction={cfg.data.val_fraction} must be in (0, 1), "
                        "e.g. data.val_fraction=0.2")
    if "split_seed" in cfg.data:
        number(cfg, "data.split_seed", int, 0, SEED_MAX, example="0")
    for key in ("cardinality", "pair", "pair_seed"):
        number(cfg, key, int, 0 if key != "cardinality" else 1, example="1")
    validate_permutation(cfg)
    number(cfg, "n_pairs", int, 1, example="10")
    if not OmegaConf.is_list(cfg.rewarded):
        raise UserError(f"rewarded={cfg.rewarded} must be a list of classes, e.g. "
                        f"rewarded=[{cfg.rewarded}]")
    check_class_indices(cfg.rewarded)  # the data set's classes are checked later
    validate_family(cfg)
    phase_callbacks(cfg)  # one checkpoint criterion, on a validation metric
    if cfg.merge.logit_weights is not None:  # the count is checked once the modules are known
        weights = cfg.merge.logit_weights
        logit_weights(len(weights) if OmegaConf.is_list(weights) else 1, weights)
    validate_trainer(cfg)


def permutation_value(value) -> str | int:
    """``ordered`` or the index (>= 0) of a random class permutation, else one-line UserError."""
    if value == ORDERED:
        return ORDERED
    try:
        if isinstance(value, bool) or float(value) != int(value) or int(value) < 0:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"permutation={value} must be {ORDERED} (classes 0, 1, 2, ... in "
                        "increasing order) or the index >= 0 of a random permutation, e.g. "
                        f"permutation={ORDERED} or permutation=3") from None
    return int(value)


def validate_permutation(cfg: DictConfig) -> None:
    """A valid ``permutation``; ``ordered`` only where the task follows a class order."""
    if permutation_value(cfg.permutation) != ORDERED:
        return  # an index: every config carries one (default 0), used where a task needs it
    task = str(cfg.task)
    between = OmegaConf.select(cfg, "path.between")
    if task == "complete" or (task == "mode_connectivity" and between == "complete"):
        return
    where = f"task={task}" + (f" with path.between={between}" if task == "mode_connectivity"
                              else "")
    raise UserError(f"permutation={ORDERED} orders the classes of task=complete and "
                    f"task=mode_connectivity (path.between=complete); {where} follows no "
                    f"class order: drop permutation={ORDERED}")


def validate_imp(cfg: DictConfig) -> None:
    flag(cfg, "imp.enabled")
    if cfg.imp.round_epochs is not None:
        number(cfg, "imp.round_epochs", int, 1, example="20")
    number(cfg, "imp.sparsity", float, 0.0, 1.0, example="0.99")
    if number(cfg, "imp.rounds", int, 0, example="2 (0 trains dense)") > MAX_IMP_ROUNDS:
        raise UserError(f"imp.rounds={cfg.imp.rounds} is more than {MAX_IMP_ROUNDS}: every IMP "
                        "round trains the module once more (20 rounds already reach 99% "
                        "sparsity at 21% per round); e.g. imp.rounds=2")
    strategy(cfg.imp.scope)


def validate_family(cfg: DictConfig) -> None:
    for key in ("enabled", "fused_optimizer", "cpu_convolutions", "explicit_mlp"):
        flag(cfg, f"family.{key}")
    if cfg.family.chunk_size is not None:
        number(cfg, "family.chunk_size", int, 1, example="8 (null: as many as fit)")
    # an alive fraction is at most 1: above 1, every phase is sparse (tests use it)
    number(cfg, "family.sparse_below", float, 0.0, example="0.15 (0: always dense)")


def validate_trainer(cfg: DictConfig) -> None:
    """trainer.accelerator (one Lightning knows, present here), trainer.devices (as that
    accelerator parses them) and trainer.precision (one Lightning accepts)."""
    name = cfg.trainer.get("accelerator", "auto")
    if isinstance(name, str):  # not an Accelerator given as a _target_ config
        _check_devices(_accelerator(name.lower()), name, cfg.trainer.get("devices", "auto"))
    precision = cfg.trainer.get("precision")
    known = precisions()  # None: Lightning checks it itself
    choices, numbers = known or ((), ())
    if precision is not None and known and precision not in (*choices, *numbers):
        raise UserError(f"trainer.precision={precision} is not a precision Lightning accepts; "
                        f"choose one of: {', '.join(choices)}")


def _check_devices(accelerator, name: str, devices) -> None:
    devices = OmegaConf.to_container(devices) if OmegaConf.is_list(devices) else devices
    if devices == "auto":
        return
    try:
        if devices in (0, "0", []):  # refused by Lightning before it parses them
            raise ValueError("selects no device")
        accelerator.parse_devices(devices)
    except (MisconfigurationException, TypeError, ValueError) as err:
        why = " ".join(str(err).split()).rstrip(".")
        raise UserError(f"trainer.devices={devices} is not valid for trainer.accelerator={name} "
                        f"({why}); e.g. trainer.devices=1") from None


def _accelerator(given: str):
    """The Lightning accelerator class that ``trainer.accelerator=given`` selects on this
    machine (as Lightning resolves auto and gpu); UserError for a name Lightning does not know
    or an accelerator this machine lacks."""
    known = sorted(AcceleratorRegistry.available_accelerators())
    if given not in (*known, "auto", "gpu"):
        raise UserError(f"trainer.accelerator={given} is not an accelerator Lightning knows; "
                        f"choose one of: auto, gpu, {', '.join(known)}")
    try:
        name = choose_accelerator(given) if given in ("auto", "gpu") else given
    except MisconfigurationException:  # gpu: neither CUDA nor MPS
        name = "cuda"
    accelerator = AcceleratorRegistry[name]["accelerator"]
    if not accelerator.is_available():
        here = [n for n in known if AcceleratorRegistry[n]["accelerator"].is_available()]
        why = ("no GPU (torch.cuda.is_available() is False)" if name == "cuda" else
               f"no {name} device")
        raise UserError(f"trainer.accelerator={given}: this machine has {why}; choose one of: "
                        f"auto, {', '.join(here)}")
    return accelerator


def tracks_val_metrics(cfg) -> bool:
    """Whether anything reads the per-epoch validation metrics other than the loss: a logger,
    or a callback monitoring one of them (the checkpoint criterion, early stopping)."""
    monitored = {str(c.get("monitor", "")) for c in cfg.callbacks.values()}
    return bool(cfg.logger) or any(m.startswith("val/") and m != "val/loss" for m in monitored)


# What validation yields each epoch, in both trainers: what a checkpoint criterion may monitor.
VAL_KEYS = ("val/loss", *(f"val/{k}" for k in METRIC_KEYS))


class BestRule:
    """The checkpoint criterion of a phase: the weights kept are those of the first epoch whose
    ``monitor`` value is strictly better (lower for ``mode=min``, higher for ``max``) than every
    earlier epoch's. A tie keeps the earlier epoch; a NaN never counts. Both trainers apply it
    (``callbacks.RestoreBestWeights`` is this rule as a Lightning callback)."""

    def __init__(self, monitor: str = "val/loss", mode: str = "min"):
        if mode not in ("min", "max"):
            raise UserError(f"callbacks.checkpoint.mode={mode} must be min or max; e.g. "
                            "callbacks.checkpoint.mode=max for val/rewarded_acc")
        if monitor not in VAL_KEYS:
            raise UserError(f"callbacks.checkpoint.monitor={monitor} is not a validation "
                            f"metric; choose one of: {', '.join(VAL_KEYS)}")
        self.monitor, self.mode = monitor, mode
        self.best_score = math.inf if mode == "min" else -math.inf
        self.best_epoch = -1

    def update(self, value: float, epoch: int) -> bool:
        """Record ``epoch``'s value; whether it is the new best (its weights are to be kept)."""
        value = float(value)
        if not (value < self.best_score if self.mode == "min" else value > self.best_score):
            return False
        self.best_score, self.best_epoch = value, epoch
        return True


def phase_callbacks(cfg) -> dict:
    """Fresh instances of the configured callbacks by name, one set per phase: the checkpoint
    criterion (exactly one ``BestRule``, first) and the others (early stopping)."""
    try:
        callbacks = {name: instantiate(c) for name, c in cfg.callbacks.items()}
    except InstantiationException as err:  # a setting BestRule refuses: its own one line
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise
    rules = [name for name, c in callbacks.items() if isinstance(c, BestRule)]
    if len(rules) != 1:
        raise UserError(f"callbacks hold {len(rules)} checkpoint criteria, not one; e.g. "
                        "callbacks.checkpoint: {_target_: maxent_lightning.callbacks."
                        "RestoreBestWeights, monitor: val/loss, mode: min} (callbacks=default)")
    return {rules[0]: callbacks.pop(rules[0]), **callbacks}


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
class Schedule:
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


def phase_epochs(cfg, final: bool) -> int:
    """E in the final phase; ``imp.round_epochs`` per round, or E // N when that is null."""
    epochs = int(cfg.trainer.max_epochs)
    if final:
        return epochs
    if cfg.imp.round_epochs is None:
        return max(1, epochs // max(int(cfg.imp.rounds), 1))
    return int(cfg.imp.round_epochs)


def schedule(recipe, net: nn.Module) -> Schedule:
    """The phase plan of ``recipe`` (a ``recipe.Recipe``, validated when built; a job config
    reads alike) for a backbone of ``net``'s architecture."""
    rounds, seed = imp_rounds(recipe.imp), int(recipe.seed)
    strat = strategy(recipe.imp.scope)
    prunable = tuple(M.prunable_names(net, include_bias=strat.include_bias))
    phases = tuple(Phase(r, phase_epochs(recipe, r == rounds), r == rounds, seed + r,
                         seed * 1000 + r) for r in range(rounds + 1))
    return Schedule(phases, strat, M.per_round_rate(float(recipe.imp.sparsity), rounds), prunable,
                     prunable[-1].rsplit(".", 1)[0], tracks_val_metrics(recipe))
