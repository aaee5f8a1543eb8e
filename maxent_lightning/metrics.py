"""Torchmetrics for modules and compositions: rewarded accuracy, non-rewarded entropy."""

from collections.abc import Sequence

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix

from .targets import rewarded_mask


def top1_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Whether the label's output is the argmax over all |C| outputs *alone*: a tie at the top
    is not a prediction (a dead module, whose outputs are all equal, scores 0, not the accuracy
    of class 0), nor is a non-finite output."""
    own = logits.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, labels.long().unsqueeze(-1), float("-inf"))
    return own > others.amax(-1)


class Top1Accuracy(Metric):
    """Accuracy by ``top1_correct`` on the samples whose label is in ``rewarded`` (all samples
    when None)."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, rewarded: Sequence[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rewarded = None if rewarded is None else list(rewarded)
        self.add_state("correct", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        correct = top1_correct(logits, labels)
        if self.rewarded is not None:
            inside = rewarded_mask(labels, self.rewarded)
            correct, labels = correct[inside], labels[inside]
        self.correct += correct.sum()
        self.total += len(labels)

    def compute(self) -> torch.Tensor:
        return self.correct / self.total if self.total > 0 else torch.tensor(float("nan"))


class RewardedAccuracy(Top1Accuracy):
    """Accuracy on the samples whose label is in R: the label's output is the only largest."""

    def __init__(self, rewarded: Sequence[int], **kwargs):
        super().__init__(rewarded, **kwargs)


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


# The keys of ``evaluation_metrics`` (``test/<key>`` in metrics.json, ``val/<key>`` per epoch).
METRIC_KEYS = ("rewarded_acc", "nonrewarded_entropy", "acc")


def evaluation_metrics(rewarded: Sequence[int], num_classes: int) -> MetricCollection:
    """Scalar metrics of a module or composition, keyed as in ``metrics.json``."""
    metrics = (RewardedAccuracy(rewarded), NonRewardedEntropy(rewarded), Top1Accuracy())
    return MetricCollection(dict(zip(METRIC_KEYS, metrics, strict=True)))


def confusion_matrix(num_classes: int) -> MulticlassConfusionMatrix:
    """Counts over all classes; rows are true labels."""
    return MulticlassConfusionMatrix(num_classes)
