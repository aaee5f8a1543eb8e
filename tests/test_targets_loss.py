import math

import pytest
import torch

from maxent_lightning.loss import MaxEntLoss, kl_to_target
from maxent_lightning.targets import make_targets

LABELS = torch.tensor([0, 1, 2, 3])


def test_maxent_targets_closed_form():
    t = make_targets(LABELS, [0, 2], 4, "maxent")
    assert torch.equal(t[0], torch.tensor([1.0, 0, 0, 0]))
    assert torch.equal(t[2], torch.tensor([0, 0, 1.0, 0]))
    assert torch.allclose(t[1], torch.full((4,), 0.25))
    assert torch.allclose(t[3], torch.full((4,), 0.25))


def test_quasi_maxent_targets_are_uniform_over_non_rewarded_only():
    t = make_targets(LABELS, [0, 2], 4, "quasi_maxent")
    assert torch.equal(t[0], torch.tensor([1.0, 0, 0, 0]))
    assert torch.allclose(t[1], torch.tensor([0, 0.5, 0, 0.5]))
    assert torch.allclose(t[3], torch.tensor([0, 0.5, 0, 0.5]))


def test_cross_entropy_targets_are_one_hot():
    t = make_targets(LABELS, [0], 4, "cross_entropy")
    assert torch.equal(t, torch.eye(4))


def test_unknown_target_kind():
    with pytest.raises(ValueError):
        make_targets(LABELS, [0], 4, "hinge")


def test_uniform_prediction_on_non_rewarded_sample_has_zero_loss():
    target = make_targets(torch.tensor([1]), [0], 10, "maxent")
    loss = MaxEntLoss(temperature=5.0)(torch.full((1, 10), 3.7), target)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_loss_on_rewarded_sample_is_cross_entropy_of_tempered_logits():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    target = make_targets(torch.tensor([0]), [0], 3, "maxent")
    expected = -torch.log_softmax(logits / 2.0, -1)[0, 0]
    assert MaxEntLoss(temperature=2.0)(logits, target).item() == pytest.approx(expected.item())


def test_kl_matches_torch_kl_div_and_is_batch_mean():
    logits = torch.randn(6, 5)
    target = make_targets(torch.tensor([0, 1, 2, 3, 4, 0]), [0, 3], 5, "quasi_maxent")
    ref = torch.nn.functional.kl_div(torch.log_softmax(logits, -1), target, reduction="batchmean")
    assert kl_to_target(logits, target).mean().item() == pytest.approx(ref.item(), rel=1e-5)


def test_uniform_target_loss_closed_form():
    # KL(u || p) for a one-hot-peaked p is ln(1/|C|) - mean(log p).
    logits = torch.tensor([[math.log(7.0), 0.0]])
    target = torch.tensor([[0.5, 0.5]])
    p = torch.tensor([7 / 8, 1 / 8])
    expected = (0.5 * torch.log(0.5 / p)).sum()
    assert kl_to_target(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)
