"""ModuleRun: the lifecycle of one stored module, the same for both trainers (``training.py``,
``family/``): ``open`` (who it is, where it goes), ``finished`` (stored already?), ``resume``
(after its last finished IMP round; its loggers), per phase ``begin_round`` / ``check_round`` /
``end_round`` (loggers' step; a diverged phase; the round's masks on disk), then ``store``
(module.pt, confusion.png, loggers, metrics.json last) or ``fail`` (nothing stored). The files
themselves are the directory protocol's (``moduledir.py``)."""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import masks as M
from . import moduledir
from .errors import UserError
from .identity import module_spec, spec_fingerprint
from .loggers import (
    begin_round,
    build_loggers,
    finish_loggers,
    log_trained,
    module_config,
    module_run_name,
)
from .module import save_module
from .modulefile import ModuleRecord
from .phases import BestRule, Phase, Schedule
from .plots import confusion_png
from .recipe import Recipe


class Diverged(UserError):
    """A module whose loss or weights stopped being finite: not stored, not merged."""


@dataclass
class ModuleRun:
    """One module of ``recipe`` rewarding ``rewarded``, trained into ``out_dir``: what it is,
    what it is trained from (set by ``resume``) and its state across the IMP rounds."""

    recipe: Recipe
    rewarded: list[int]
    out_dir: Path
    spec: dict  # identity.module_spec; its digest is the fingerprint
    fingerprint: str
    # what it is trained from (``resume``): the data module, θ0's digest, the loss temperature
    dm: Any = None
    theta0_id: str = ""
    temperature: float = 0.0
    # its state: current masks, first round still to train, stop epoch of each phase so far,
    # training steps so far (the loggers' step), its loggers, why it diverged
    masks: M.Masks = field(default_factory=dict)
    start: int = 0
    stop_epochs: list[int] = field(default_factory=list)
    steps: int = 0
    loggers: list = field(default_factory=list)
    failed: str | None = None

    @classmethod
    def open(cls, recipe: Recipe, rewarded, out_dir: Path) -> "ModuleRun":
        """The run of the module of ``recipe`` rewarding ``rewarded`` (None: its own)."""
        spec = module_spec(recipe, rewarded)
        rewarded = sorted(rewarded if rewarded is not None else recipe.rewarded)
        return cls(recipe, rewarded, Path(out_dir), spec, spec_fingerprint(spec))

    @property
    def what(self) -> str:
        return f"module R={self.rewarded} seed={self.recipe.seed}"

    def finished(self) -> dict | None:
        """The metrics of this module when its directory holds it (a corrupt one: None,
        warned)."""
        return moduledir.finished_module(self.out_dir, self.fingerprint)

    def resume(self, phases: Schedule, net, steps_per_epoch: int, *, dm, theta0_id: str,
               temperature: float) -> None:
        """Start on ``dm`` from θ0 (``net``'s weights, digest ``theta0_id``): after the last
        finished IMP round of ``phases`` in its directory, else at round 0 with every weight of
        ``net`` alive (masks on CPU); its loggers open, their step after the rounds done."""
        self.dm, self.theta0_id, self.temperature = dm, theta0_id, float(temperature)
        resumed = moduledir.resume_point(self.out_dir, self.fingerprint, phases.rounds)
        masks, self.start, self.stop_epochs = resumed or (phases.full_masks(net), 0, [])
        self.masks = {n: v.cpu() for n, v in masks.items()}
        self.steps = sum(self.stop_epochs) * steps_per_epoch
        r = self.recipe
        self.loggers = build_loggers(
            r.logger, self.out_dir, module_run_name(r, self.rewarded, self.fingerprint),
            tags=r.tags, config=module_config(r.run_config, self.rewarded, self.fingerprint))

    def begin_round(self, r: int, step_offset: int = 0) -> None:
        """Its loggers' rows carry IMP round ``r``, their steps offset by ``step_offset``."""
        begin_round(self.loggers, r, step_offset)

    def check_round(self, phase: Phase, best: BestRule, state: dict) -> None:
        """A phase with no finite value of the checkpoint criterion ``best``, or a non-finite
        weight in its kept ``state``, is a diverged module (Diverged)."""
        what = f"{self.what} in IMP phase {phase.round}"
        if not math.isfinite(best.best_score):
            raise Diverged(f"{what} diverged: its {best.monitor} is not finite; nothing was "
                           "stored for it; lower optimizer.lr or check the data")
        check_finite(state, what)

    def end_round(self, phase: Phase, best: BestRule, masks: M.Masks) -> None:
        """Before the final phase: the next round's ``masks`` and the round's record (``best``,
        the stop epochs) in its directory, where ``resume`` finds them."""
        if phase.final:
            return
        self.masks = masks
        moduledir.save_round(self.out_dir, phase.round, masks, self.fingerprint, best,
                             self.stop_epochs)

    def store(self, state_dict: dict, test: dict, confusion: torch.Tensor, wall_s: float,
              log_test: bool = False) -> dict:
        """The trained module (weights ``state_dict``, ``test`` scores, ``confusion`` counts)
        stored: module.pt, confusion.png (``recipe.figures``), its loggers (``log_test``:
        the test scores too, where no Lightning test logged them) and metrics.json, last. Its
        metrics (the confusion matrix among them)."""
        dm, seed = self.dm, self.recipe.seed
        metrics = dict(test)
        metrics.update(
            sparsity=M.sparsity(self.masks), rewarded=self.rewarded, seed=seed,
            fingerprint=self.fingerprint, theta0_id=self.theta0_id, data=dm.name,
            num_classes=dm.num_classes, confusion=confusion.tolist(),
            stop_epochs=self.stop_epochs, wall_s=round(wall_s, 2),
        )
        check_finite(state_dict, self.what)
        save_module(self.out_dir / moduledir.MODULE, ModuleRecord(
            state_dict=state_dict, masks=self.masks, theta0_id=self.theta0_id,
            rewarded=self.rewarded, num_classes=dm.num_classes, input_shape=tuple(dm.input_shape),
            temperature=self.temperature, seed=seed, spec=self.spec, fingerprint=self.fingerprint,
            metrics=dict(metrics)))
        figure = self.recipe.figures
        if figure:
            confusion_png(self.out_dir / "confusion.png", confusion, dm.splits.classes,
                          title=f"R={self.rewarded} seed={seed}")
        for logger in self.loggers if log_test else []:
            logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("test/")},
                               step=self.steps)
            logger.save()
            logger.finalize("success")
        log_trained(self.loggers, self.out_dir, metrics, figure, dm.splits.classes)
        finish_loggers(self.loggers)
        moduledir.mark_done(self.out_dir, metrics)
        return metrics

    def fail(self) -> None:
        """Nothing is stored: its loggers' runs end as failed."""
        finish_loggers(self.loggers, failed=True)


def _finite(t: torch.Tensor) -> bool:
    """Every entry finite; through numpy on CPU (one pass, no thread pool: torch's isfinite
    makes several and stalls on a busy CPU)."""
    if t.device.type == "cpu" and t.dtype in (torch.float16, torch.float32, torch.float64):
        return bool(np.isfinite(t.detach().numpy()).all())
    return bool(torch.isfinite(t).all())


def check_finite(state: dict, what: str) -> None:
    """Refuse a state with a NaN or infinite entry (a diverged module is never stored)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not _finite(v)]
    if bad:
        raise Diverged(f"{what} diverged: {bad[0]} is not finite; nothing was stored for it; "
                       "lower optimizer.lr or check the data")
