"""torchvision ResNet18 / VGG11 adapted to small (CIFAR/MNIST-sized) inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.vgg import VGG, cfgs, make_layers


def _shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise ValueError(f"expected a (C, H, W) input_shape, got {tuple(input_shape)}")
    return shape  # type: ignore[return-value]


class ResNet18(ResNet):
    """torchvision ResNet-18 with a 3x3/stride-1 stem and no stem max-pool (CIFAR style).

    ``width``: channels of the first stage (64 in ResNet-18; the stages have 1x, 2x, 4x, 8x).
    The blocks are torchvision's ``BasicBlock``; ``ResNet.forward`` runs them."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 64) -> None:
        nn.Module.__init__(self)
        self.input_shape, w = _shape(input_shape), int(width)
        self.conv1 = nn.Conv2d(self.input_shape[0], w, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        stages, inplanes = [], w
        for i, planes in enumerate((w, 2 * w, 4 * w, 8 * w)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                     nn.BatchNorm2d(planes))
            stages.append(nn.Sequential(BasicBlock(inplanes, planes, stride, down),
                                        BasicBlock(planes, planes)))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * w, int(num_classes))
        for m in self.modules():  # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            x = x.reshape(x.shape[0], *self.input_shape)
        return super().forward(x)


class VGG11(VGG):
    """torchvision VGG-11 (config "A", BN by default) with a global-pool + 512-512-K head;
    ``width`` scales every layer (channels of the first conv, 64 in VGG-11).

    Max-pools that would shrink the feature map below 1x1 (inputs < 32x32) become Identity.
    ``VGG.__init__`` is skipped on purpose: it would allocate (and initialise) the 100M-param
    ImageNet classifier only to throw it away; ``VGG.forward`` only needs the three parts below.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        batch_norm: bool = True,
        dropout: float = 0.0,
        width: int = 64,
    ) -> None:
        nn.Module.__init__(self)
        self.input_shape = _shape(input_shape)
        scale = int(width) / 64  # channels of the first conv (64 in VGG-11)
        plan = [v if v == "M" else max(1, round(v * scale)) for v in cfgs["A"]]
        features = make_layers(plan, batch_norm=batch_norm)
        first = features[0]
        features[0] = nn.Conv2d(self.input_shape[0], first.out_channels, 3, padding=1)
        size, pools = min(self.input_shape[1:]), 0
        for i, layer in enumerate(features):
            if isinstance(layer, nn.MaxPool2d):
                if size >= 2:
                    size, pools = size // 2, pools + 1
                else:
                    features[i] = nn.Identity()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        top = plan[-2]  # channels of the last conv (512 in VGG-11)
        self.classifier = nn.Sequential(
            nn.Linear(top, top),
            nn.ReLU(inplace=True),
            nn.Dropout(float(dropout)),
            nn.Linear(top, int(num_classes)),
        )
        for m in self.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            x = x.reshape(x.shape[0], *self.input_shape)
        return super().forward(x)
