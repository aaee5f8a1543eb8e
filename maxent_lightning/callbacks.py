"""Small Lightning callbacks of the framework."""

import copy
import sys
from collections.abc import Mapping

import torch
from lightning.pytorch.callbacks import Callback, ProgressBar, TQDMProgressBar

from . import masks as M
from .phases import BestRule, Schedule


class RestoreBestWeights(BestRule, Callback):
    """The checkpoint criterion (``phases.BestRule``: ``monitor``, ``mode``, ties keep the
    earlier epoch) as a Lightning callback: it keeps the weights of the best validation epoch in
    memory and restores them when the fit ends, so that the model evaluated and saved is that
    one. ``callbacks.checkpoint`` configures it (by default as the protocol says)."""

    def __init__(self, monitor: str = "val/loss", mode: str = "min"):
        super().__init__(monitor, mode)
        self.best_state = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        if self.update(trainer.callback_metrics[self.monitor], trainer.current_epoch):
            self.best_state = copy.deepcopy(pl_module.state_dict())

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.best_state is not None:
            pl_module.load_state_dict(self.best_state)


class IterativeMagnitudePruning(Callback):
    """Lightning adapter of the IMP strategy of a phase plan, for one module across fits.

    At the start of every fit it hands the module its current masks, which the module enforces
    itself (``MaxEntModule``: gradients masked before each optimizer step, weights re-masked
    after it). At the end of each fit before the final phase it draws the next masks with
    ``plan.next_masks`` and rewinds the survivors to θ0. Register it after
    ``RestoreBestWeights`` so that the kept (best-validation) weights are pruned.
    """

    def __init__(self, schedule: Schedule, theta0: Mapping[str, torch.Tensor], masks: M.Masks,
                 start_round: int = 0):
        self.schedule, self.theta0, self.masks, self.round = schedule, theta0, masks, start_round

    @property
    def final_phase(self) -> bool:
        return self.round >= self.schedule.rounds

    def on_fit_start(self, trainer, pl_module) -> None:
        pl_module.masks = self.masks

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.final_phase:
            return
        net = pl_module.net
        self.masks = self.schedule.next_masks(dict(net.named_parameters()), self.masks)
        M.rewind(net, self.theta0, self.masks)
        pl_module.masks = self.masks
        self.round += 1


def epoch_text(phase: str, epoch: int, epochs: int | None) -> str:
    """'IMP round 1/2, epoch 3/10' (1-based; no phase for dense training)."""
    total = f"/{epochs}" if epochs and epochs > 0 else ""
    return ", ".join(filter(None, [phase, f"epoch {epoch + 1}{total}"]))


class PhaseBar(TQDMProgressBar):
    """Lightning's TQDM bar (on a terminal), its description naming the IMP phase."""

    def __init__(self, phase: str = ""):
        super().__init__()
        self.phase = phase

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(
            epoch_text(self.phase, trainer.current_epoch, trainer.max_epochs))


class EpochLines(ProgressBar):
    """Progress without a terminal (piped, redirected, a cluster log): one line per epoch with
    its phase and losses, instead of TQDM bars redrawn with carriage returns. A line is printed
    once the epoch's metrics are final (the module logs train/loss after callbacks' epoch end)."""

    def __init__(self, phase: str = ""):
        super().__init__()
        self.phase, self.enabled, self.pending = phase, True, None

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.enabled and not trainer.sanity_checking:
            self.pending = trainer.current_epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._flush(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._flush(trainer, pl_module)

    def _flush(self, trainer, pl_module) -> None:
        if self.pending is None:
            return
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        values = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in sorted(metrics.items()))
        text = epoch_text(self.phase, self.pending, trainer.max_epochs)
        print(f"{text}: {values}" if values else text, flush=True)
        self.pending = None


def progress_bar(phase: str = "") -> ProgressBar:
    """The progress callback of a fit: a TQDM bar on a terminal, else one line per epoch."""
    return PhaseBar(phase) if sys.stdout.isatty() else EpochLines(phase)
