"""The MaxEnt loss: KL(ỹ ‖ softmax(z / T)), batch mean."""

import torch
from torch import nn


def _kl(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.xlogy(targets, targets).sum(-1) - (targets * log_probs).sum(-1)


def kl_to_target(scaled_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(ỹ ‖ softmax(z/T)); zero target entries contribute 0."""
    return _kl(torch.log_softmax(scaled_logits, dim=-1), targets)


def kl_and_gradient(scaled_logits: torch.Tensor, targets: torch.Tensor):
    """Per-sample KL(ỹ ‖ softmax(z/T)) and its gradient with respect to z/T (what autograd
    takes through kl_to_target): sum(ỹ) softmax(z/T) - ỹ."""
    log_probs = torch.log_softmax(scaled_logits, dim=-1)
    return _kl(log_probs, targets), log_probs.exp() * targets.sum(-1, keepdim=True) - targets


def batch_means(kl: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-member means (K,) of per-sample losses (K, B); ``weight`` (K, B): each sample's
    share of its member's mean (None: the plain mean)."""
    return kl.mean(-1) if weight is None else (kl * weight).sum(-1)


class MaxEntLoss(nn.Module):
    """KL divergence between a target distribution and the tempered softmax.

    ``forward`` takes raw logits z and divides by the temperature itself; ``scale`` exposes
    z/T so that evaluation uses exactly the same distribution.
    """

    def __init__(self, temperature: float = 5.0, targets: str = "maxent"):
        super().__init__()
        self.temperature = float(temperature)
        self.targets = targets

    def scale(self, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.temperature

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return kl_to_target(self.scale(logits), targets).mean()
