"""Fully connected backbone (shallow: hidden=[512], deep: hidden=[512, 256])."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten -> [Linear, ReLU, Dropout] per hidden layer -> Linear (no bias by default)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (512,),
        dropout: float = 0.5,
        output_bias: bool = False,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(self.input_shape)
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(inplace=True), nn.Dropout(float(dropout))]
            width = int(h)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, int(num_classes), bias=output_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
