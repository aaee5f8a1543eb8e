"""Target distributions per rewarded set: MaxEnt, Quasi-MaxEnt and cross-entropy."""

from collections.abc import Sequence

import torch

TARGET_KINDS = ("maxent", "quasi_maxent", "cross_entropy")


def rewarded_mask(labels: torch.Tensor, rewarded: Sequence[int]) -> torch.Tensor:
    """Boolean mask of the samples whose label is in the rewarded set."""
    return torch.isin(labels, torch.as_tensor(list(rewarded), device=labels.device))


def make_targets(
    labels: torch.Tensor, rewarded: Sequence[int], num_classes: int, kind: str = "maxent"
) -> torch.Tensor:
    """Target distribution ỹ (n, |C|) for each label.

    - ``maxent``: one-hot if y ∈ R, else uniform 1/|C| over all classes.
    - ``quasi_maxent``: one-hot if y ∈ R, else uniform 1/|C∖R| over the non-rewarded classes.
    - ``cross_entropy``: one-hot for every label (the data module keeps only y ∈ R).
    """
    if kind not in TARGET_KINDS:
        raise ValueError(f"unknown target kind {kind!r}; choose one of {TARGET_KINDS}")
    onehot = torch.nn.functional.one_hot(labels.long(), num_classes).float()
    if kind == "cross_entropy":
        return onehot
    inside = rewarded_mask(labels, rewarded)
    if kind == "maxent":
        off = torch.full((num_classes,), 1.0 / num_classes)
    else:
        off = (~rewarded_mask(torch.arange(num_classes), rewarded)).float()
        off = off / off.sum()
    return torch.where(inside[:, None], onehot, off.to(onehot)[None, :])
