"""Iterative magnitude pruning strategies: pure functions chosen by ``imp.scope``.

A strategy maps (trained parameters, current masks, per-round rate K, output layer) to the next
masks; it never touches a model. Both trainers and the Lightning adapter
(``callbacks.IterativeMagnitudePruning``) call the same strategy.
"""

import contextlib
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
    """The strategy named by ``imp.scope``: one of ``STRATEGIES``, or the import path of a
    ``Strategy`` of your own (docs/extending.md)."""
    if scope in STRATEGIES:
        return STRATEGIES[scope]
    found = None
    if "." in str(scope):
        from hydra.utils import get_object

        with contextlib.suppress(Exception):  # not importable: the one line below
            found = get_object(str(scope))
    if not isinstance(found, Strategy):
        raise UserError(f"imp.scope={scope} must be one of: {', '.join(STRATEGIES)}, or the "
                        "import path of a maxent_lightning.imp.Strategy (e.g. mypkg.prune.MINE)")
    return found
