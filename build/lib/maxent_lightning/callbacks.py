"""Small Lightning callbacks of the framework."""

import copy
from collections.abc import Mapping

import torch
from lightning.pytorch.callbacks import Callback

from . import masks as M
from .phases import PhasePlan


class RestoreBestWeights(Callback):
    """Keep the weights of the best validation epoch in memory and restore them when the fit
    ends, so that the model evaluated and saved is the best-validation one."""

    def __init__(self, monitor: str = "val/loss"):
        self.monitor = monitor
        self.best_score, self.best_epoch, self.best_state = float("inf"), -1, None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        score = float(trainer.callback_metrics[self.monitor])
        if score < self.best_score:
            self.best_score, self.best_epoch = score, trainer.current_epoch
            self.best_state = copy.deepcopy(pl_module.state_dict())

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.best_state is not None:
            pl_module.load_state_dict(self.best_state)


class IterativeMagnitudePruning(Callback):
    """Lightning adapter of the IMP strategy of a phase plan, for one module across fits.

    During every fit it keeps pruned entries at exactly zero (gradients masked before each
    optimizer step, weights re-masked after it). At the end of each fit before the final phase
    it draws the next masks with ``plan.next_masks`` and rewinds the survivors to θ0.
    Register it after ``RestoreBestWeights`` so that the best-validation weights are pruned.
    """

    def __init__(self, plan: PhasePlan, theta0: Mapping[str, torch.Tensor], masks: M.Masks,
                 start_round: int = 0):
        self.plan, self.theta0, self.masks, self.round = plan, theta0, masks, start_round

    @property
    def final_phase(self) -> bool:
        return self.round >= self.plan.rounds

    def on_fit_start(self, trainer, pl_module) -> None:
        M.apply_masks(pl_module.net, self.masks)
        # Per fit: (parameter, mask as 0/1 of its dtype); a bool factor is ~10x slower per step.
        params = dict(pl_module.net.named_parameters())
        self._factors = [(params[n], m.to(params[n].device, params[n].dtype))
                         for n, m in self.masks.items()]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        for param, factor in self._factors:
            if param.grad is not None:
                param.grad.mul_(factor)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for param, factor in self._factors:
            param.mul_(factor)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.final_phase:
            return
        net = pl_module.net
        self.masks = self.plan.next_masks(dict(net.named_parameters()), self.masks)
        M.rewind(net, self.theta0, self.masks)
        self.round += 1
