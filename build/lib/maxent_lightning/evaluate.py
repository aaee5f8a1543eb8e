"""Evaluate any net or composition on a test set for a (union of) rewarded set(s)."""

import math
from collections.abc import Callable, Sequence

import torch

from .loss import kl_to_target
from .metrics import confusion_matrix, evaluation_metrics
from .targets import make_targets


@torch.no_grad()
def evaluate(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    rewarded: Sequence[int],
    num_classes: int,
    temperature: float,
    targets: str = "maxent",
    batch_size: int = 1000,
) -> dict:
    """Rewarded accuracy, non-rewarded entropy, accuracy, the loss KL(ỹ ‖ softmax(z/T)) with
    targets built for ``rewarded``, and the confusion matrix (rows: true label); every score
    is NaN when an output is not finite."""
    metrics = evaluation_metrics(rewarded, num_classes)
    confusion = confusion_matrix(num_classes)
    loss_sum, finite = 0.0, True
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        scaled = model(xb).float().cpu() / temperature
        finite = finite and bool(torch.isfinite(scaled).all())
        metrics.update(scaled, yb)
        confusion.update(scaled, yb)
        target = make_targets(yb, rewarded, num_classes, targets)
        loss_sum += float(kl_to_target(scaled, target).sum())
    # Non-finite outputs score nothing (an argmax over NaN would name class 0 "correct").
    out = {k: float(v) if finite else math.nan for k, v in metrics.compute().items()}
    out["loss"] = loss_sum / len(y) if finite else math.nan
    out["confusion"] = confusion.compute().tolist()
    return out
