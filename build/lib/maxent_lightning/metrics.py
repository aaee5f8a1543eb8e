"""Torchmetrics for modules and compositions: rewarded accuracy, non-rewarded entropy."""

from collections.abc import Sequence

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from .targets import rewarded_mask


class RewardedAccuracy(Metric):
    """Accuracy (argmax over all |C| outputs) on the samples whose label is in R."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, rewarded: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.rewarded = list(rewarded)
        self.add_state("correct", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        inside = rewarded_mask(labels, self.rewarded)
        self.correct += (logits.argmax(-1) == labels)[inside].sum()
        self.total += inside.sum()

    def compute(self) -> torch.Tensor:
        return self.correct / self.total if self.total > 0 else torch.tensor(float("nan"))


class NonRewardedEntropy(Metric):
    """Mean Shannon entropy (nats) of softmax(z/T) on samples whose label is not in R.

    ``update`` takes the already tempered logits z/T. NaN when R = C (undefined).
    """

    full_state_update = False

    def __init__(self, rewarded: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.rewarded = list(rewarded)
        self.add_state("entropy_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, scaled_logits: torch.Tensor, labels: torch.Tensor) -> None:
        outside = ~rewarded_mask(labels, self.rewarded)
        log_p = torch.log_softmax(scaled_logits[outside].double(), dim=-1)
        self.entropy_sum += -(log_p.exp() * log_p).sum()
        self.count += outside.sum()

    def compute(self) -> torch.Tensor:
        if self.count == 0:
            return torch.tensor(float("nan"))
        return (self.entropy_sum / self.count).float()


def evaluation_metrics(rewarded: Sequence[int], num_classes: int) -> MetricCollection:
    """Scalar metrics of a module or composition, keyed as in ``metrics.json``."""
    return MetricCollection(
        {
            "rewarded_acc": RewardedAccuracy(rewarded),
            "nonrewarded_entropy": NonRewardedEntropy(rewarded),
            "acc": MulticlassAccuracy(num_classes, average="micro"),
        }
    )


def confusion_matrix(num_classes: int) -> MulticlassConfusionMatrix:
    """Counts over all classes; rows are true labels."""
    return MulticlassConfusionMatrix(num_classes)
