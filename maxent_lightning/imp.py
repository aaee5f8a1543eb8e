"""Iterative magnitude pruning with rewind to θ0, as a Lightning callback across fits."""

from collections.abc import Mapping

import torch
from lightning.pytorch.callbacks import Callback

from . import masks as M


class IterativeMagnitudePruning(Callback):
    """Holds θ0 and the masks of one module.

    During every fit it keeps pruned entries at exactly zero (gradients masked before each
    optimizer step, weights re-masked after it). At the end of each of the first ``rounds``
    fits it prunes a fraction K = 1 − (1 − P)^(1/N) of the still-alive entries by magnitude
    (``scope="global"``: one threshold; ``"layerwise"``: per tensor, output layer at K/2) and
    rewinds the survivors to θ0. The fit after the last pruning is the final training phase.
    """

    def __init__(
        self,
        theta0: Mapping[str, torch.Tensor],
        masks: M.Masks,
        rounds: int,
        sparsity: float,
        scope: str = "global",
        output_layer: str | None = None,
        start_round: int = 0,
    ):
        self.theta0, self.masks = theta0, masks
        self.rounds, self.scope, self.round = rounds, scope, start_round
        self.rate = M.per_round_rate(sparsity, rounds)
        self.output_layer = output_layer

    @property
    def final_phase(self) -> bool:
        return self.round >= self.rounds

    def next_masks(self, params: Mapping[str, torch.Tensor]) -> M.Masks:
        if self.scope == "global":
            return M.prune_global(params, self.masks, self.rate)
        rates = M.layerwise_rates(list(self.masks), self.rate, self.output_layer)
        return M.prune_layerwise(params, self.masks, rates)

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
        self.masks = self.next_masks(dict(net.named_parameters()))
        M.rewind(net, self.theta0, self.masks)
        self.round += 1
