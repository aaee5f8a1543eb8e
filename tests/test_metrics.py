import math

import pytest
import torch

from maxent_lightning.metrics import NonRewardedEntropy, RewardedAccuracy, evaluation_metrics


def test_rewarded_accuracy_counts_only_rewarded_labels_with_argmax_over_all_classes():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [0, 5.0, 0]])
    labels = torch.tensor([0, 0, 2, 1])  # second sample of class 0 is wrong
    metric = RewardedAccuracy([0])
    metric.update(logits, labels)
    assert metric.compute().item() == pytest.approx(0.5)


def test_nonrewarded_entropy_is_mean_over_non_rewarded_samples_in_nats():
    scaled = torch.tensor([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [9.0, 0, 0]])
    labels = torch.tensor([1, 2, 0])
    metric = NonRewardedEntropy([0])
    metric.update(scaled, labels)
    assert metric.compute().item() == pytest.approx(math.log(3) / 2, abs=1e-5)


def test_entropy_undefined_when_every_class_is_rewarded():
    metric = NonRewardedEntropy([0, 1])
    metric.update(torch.zeros(2, 2), torch.tensor([0, 1]))
    assert math.isnan(metric.compute().item())


def test_overall_accuracy_is_micro_averaged():
    metrics = evaluation_metrics([0], 3)
    logits = torch.eye(3)[[0, 0, 0, 1]]
    labels = torch.tensor([0, 0, 0, 2])  # 3/4 correct; macro would give (1 + 0 + 0)/2
    metrics.update(logits, labels)
    assert metrics.compute()["acc"].item() == pytest.approx(0.75)


def test_a_tie_at_the_top_is_not_a_correct_prediction():
    """A dead module (all outputs equal) must not score class 0's samples as correct."""
    nan = float("nan")
    logits = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [2.0, 1.0, 2.0], [3.0, 1.0, 0.0],
                           [nan, 0.0, 0.0], [0.0, 0.5, 0.0]])
    labels = torch.tensor([0, 0, 2, 0, 0, 1])  # only samples 3 and 5 are predicted alone
    rewarded = RewardedAccuracy([0, 2])
    rewarded.update(logits, labels)
    assert rewarded.compute().item() == pytest.approx(1 / 5)
    metrics = evaluation_metrics([0, 2], 3)
    metrics.update(logits, labels)
    assert metrics.compute()["acc"].item() == pytest.approx(2 / 6)
    dead = evaluation_metrics([0], 3)
    dead.update(torch.zeros(4, 3), torch.tensor([0, 0, 1, 2]))
    assert dead.compute()["rewarded_acc"].item() == 0.0 and dead.compute()["acc"].item() == 0.0
