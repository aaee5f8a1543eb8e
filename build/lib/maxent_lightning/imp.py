"""Iterative magnitude pruning strategies: pure functions chosen by ``imp.scope``.

A strategy maps (trained parameters, current masks, per-round rate K, output layer) to the next
masks; it never touches a model. Both trainers and the Lightning adapter
(``callbacks.IterativeMagnitudePruning``) call the same strategy.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from . import masks as M
from .errors import UserError

Params = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Strategy:
    """How one IMP round prunes: which tensors are prunable and how the next masks are drawn."""

    name: str
    include_bias: bool
    prune: Callable[[Params, M.Masks, float, str], M.Masks]
    doc: str


def _global(params: Params, masks: M.Masks, rate: float, output_layer: str) -> M.Masks:
    return M.prune_global(params, masks, rate)


def _layerwise(params: Params, masks: M.Masks, rate: float, output_layer: str) -> M.Masks:
    return M.prune_layerwise(params, masks, M.layerwise_rates(list(masks), rate, output_layer))


STRATEGIES = {
    "global": Strategy("global", False, _global,
                       "one magnitude threshold across all Linear/Conv weights (paper's text)"),
    "layerwise": Strategy("layerwise", True, _layerwise,
                          "every Linear/Conv weight and bias at K, output layer at K/2 "
                          "(authors' released code)"),
}


def strategy(scope: str) -> Strategy:
    if scope not in STRATEGIES:
        raise UserError(f"imp.scope={scope} must be one of: {', '.join(STRATEGIES)}")
    return STRATEGIES[scope]
