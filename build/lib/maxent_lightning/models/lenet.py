"""The paper's small CNN: [conv, ReLU, maxpool 2x2] blocks -> MLP head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LeNet(nn.Module):
    """Conv(k, padding)+ReLU+MaxPool(2) per channel entry, flatten, hidden Linear+ReLU+Dropout,
    output Linear (no bias by default). Works for any (C, H, W) input; flat input is reshaped."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (64,),
        kernel_size: int = 5,
        padding: int = 1,
        hidden: Sequence[int] = (120, 64),
        dropout: float = 0.0,
        output_bias: bool = False,
    ) -> None:
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        if len(shape) == 2:  # (H, W) -> single channel
            shape = (1, *shape)
        if len(shape) != 3:
            raise ValueError(f"LeNet needs a (C, H, W) input_shape, got {tuple(input_shape)}")
        self.input_shape = shape
        convs: list[nn.Module] = []
        in_ch = shape[0]
        for ch in channels:
            convs += [
                nn.Conv2d(in_ch, int(ch), int(kernel_size), padding=int(padding)),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, 2),
            ]
            in_ch = int(ch)
        self.features = nn.Sequential(*convs, nn.Flatten())
        with torch.no_grad():
            width = self.features(torch.zeros(1, *shape)).shape[1]
        head: list[nn.Module] = []
        for h in hidden:
            head += [nn.Linear(width, int(h)), nn.ReLU(inplace=True), nn.Dropout(float(dropout))]
            width = int(h)
        self.hidden = nn.Sequential(*head)
        self.classifier = nn.Linear(width, int(num_classes), bias=output_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            x = x.reshape(x.shape[0], *self.input_shape)
        return self.classifier(self.hidden(self.features(x)))
