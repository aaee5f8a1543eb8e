"""Pure functions for iterative magnitude pruning masks.

A mask set is a ``dict[name, bool tensor]`` over the prunable parameters of a model; these
functions never touch the model except :func:`apply_masks` and :func:`rewind`.
"""

from collections.abc import Mapping

import torch
from torch import nn

Masks = dict[str, torch.Tensor]
PRUNABLE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def per_round_rate(sparsity: float, rounds: int) -> float:
    """K = 1 − (1 − P)^(1/N): the fraction of still-alive weights pruned each round."""
    return 0.0 if rounds == 0 else 1.0 - (1.0 - sparsity) ** (1.0 / rounds)


def prunable_names(model: nn.Module, include_bias: bool = False) -> list[str]:
    """Names of the weights (and optionally biases) of Linear/Conv layers, in model order."""
    names = []
    for prefix, layer in model.named_modules():
        if isinstance(layer, PRUNABLE_LAYERS):
            names.append(f"{prefix}.weight")
            if include_bias and layer.bias is not None:
                names.append(f"{prefix}.bias")
    return names


def full_masks(model: nn.Module, names: list[str]) -> Masks:
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}


def _prune_smallest(scores: torch.Tensor, alive: torch.Tensor, count: int) -> torch.Tensor:
    """Flat keep-mask after removing the ``count`` smallest alive scores (stable on ties)."""
    keep = alive.clone()
    if count <= 0:
        return keep
    alive_idx = alive.nonzero().squeeze(1)
    values = scores[alive_idx]
    # The first ``count`` of a stable sort, in linear time: every score below the count-th
    # smallest, then the lowest-index entries equal to it.
    cut = values.kthvalue(min(count, len(values))).values
    prune = values < cut
    ties = (values == cut).nonzero().squeeze(1)
    prune[ties[: count - int(prune.sum())]] = True
    keep[alive_idx[prune]] = False
    return keep


def prune_global(params: Mapping[str, torch.Tensor], masks: Masks, rate: float) -> Masks:
    """One magnitude threshold across all masked tensors: prune ``rate`` of the alive entries."""
    names = list(masks)
    scores = torch.cat([params[n].detach().abs().flatten().float().cpu() for n in names])
    alive = torch.cat([masks[n].flatten().cpu() for n in names])
    keep = _prune_smallest(scores, alive, round(rate * int(alive.sum())))
    out, start = {}, 0
    for n in names:
        size = masks[n].numel()
        out[n] = keep[start : start + size].view_as(masks[n]).to(masks[n].device)
        start += size
    return out


def prune_layerwise(
    params: Mapping[str, torch.Tensor], masks: Masks, rates: Mapping[str, float]
) -> Masks:
    """Each tensor pruned separately at its own rate of its alive entries."""
    out = {}
    for n, mask in masks.items():
        scores = params[n].detach().abs().flatten().float().cpu()
        alive = mask.flatten().cpu()
        keep = _prune_smallest(scores, alive, round(rates[n] * int(alive.sum())))
        out[n] = keep.view_as(mask).to(mask.device)
    return out


def layerwise_rates(names: list[str], rate: float, output_layer: str) -> dict[str, float]:
    """The authors' released schedule: rate K per layer, the output layer at K/2."""
    return {n: rate / 2 if n.rsplit(".", 1)[0] == output_layer else rate for n in names}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero the pruned entries in place."""
    params = dict(model.named_parameters())
    for n, mask in masks.items():
        params[n].mul_(mask.to(params[n].device, params[n].dtype))


@torch.no_grad()
def rewind(model: nn.Module, theta0: Mapping[str, torch.Tensor], masks: Masks) -> None:
    """Reset every parameter and buffer to θ0, then zero the pruned entries."""
    model.load_state_dict(theta0)
    apply_masks(model, masks)


def density(masks: Masks) -> float:
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / max(total, 1)


def sparsity(masks: Masks) -> float:
    """Fraction of pruned entries among the prunable tensors."""
    return 1.0 - density(masks)


def union(mask_sets: list[Masks]) -> Masks:
    """Element-wise OR of several mask sets over the same tensors."""
    out = {n: m.clone() for n, m in mask_sets[0].items()}
    for masks in mask_sets[1:]:
        for n, m in masks.items():
            out[n] |= m
    return out
