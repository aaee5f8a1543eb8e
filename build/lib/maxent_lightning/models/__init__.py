"""Backbones: each takes ``input_shape`` and ``num_classes`` and returns raw logits."""

from maxent_lightning.models.lenet import LeNet
from maxent_lightning.models.mlp import MLP
from maxent_lightning.models.vision import VGG11, ResNet18

__all__ = ["MLP", "LeNet", "ResNet18", "VGG11"]
