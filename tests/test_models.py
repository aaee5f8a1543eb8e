"""Shape, structure and determinism tests for the backbones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maxent_lightning.models import MLP, VGG11, LeNet, ResNet18

CASES = [
    (MLP, {}, (1, 28, 28), 10),
    (MLP, {}, (561,), 5),
    (MLP, {"hidden": [512, 256]}, (8,), 4),
    (MLP, {}, (1, 8, 8), 10),
    (LeNet, {}, (1, 28, 28), 10),
    (LeNet, {}, (1, 8, 8), 10),
    (LeNet, {"channels": [32, 64]}, (3, 32, 32), 100),
    (ResNet18, {}, (3, 32, 32), 10),
    (ResNet18, {}, (1, 28, 28), 5),
    (VGG11, {}, (3, 32, 32), 100),
    (VGG11, {"batch_norm": False}, (1, 28, 28), 10),
]


def _ids(case):
    cls, kw, shape, k = case
    return f"{cls.__name__}-{'x'.join(map(str, shape))}-{k}{'-' + str(kw) if kw else ''}"


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_forward_shape(case):
    cls, kw, shape, k = case
    torch.manual_seed(0)
    model = cls(input_shape=shape, num_classes=k, **kw)
    for batch in (2, 3):
        out = model(torch.randn(batch, *shape))
        assert out.shape == (batch, k)
        assert torch.isfinite(out).all()


def test_flat_input_accepted():
    model = LeNet(input_shape=(1, 8, 8), num_classes=10).eval()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(model(x.flatten(1)), model(x))


@pytest.mark.parametrize("cls", [MLP, LeNet])
def test_output_bias_and_dropout(cls):
    model = cls(input_shape=(1, 28, 28), num_classes=10)
    assert model.classifier.bias is None
    model = cls(input_shape=(1, 28, 28), num_classes=10, output_bias=True, dropout=0.3)
    assert model.classifier.bias is not None and model.classifier.bias.shape == (10,)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(m.p == pytest.approx(0.3) for m in drops)


@pytest.mark.parametrize(
    "case",
    CASES[:1] + CASES[4:5] + CASES[8:9] + CASES[9:10],
    ids=["MLP", "LeNet", "ResNet18", "VGG11"],
)
def test_same_seed_same_init(case):
    cls, kw, shape, k = case
    states = []
    for _ in range(2):
        torch.manual_seed(123)
        states.append(cls(input_shape=shape, num_classes=k, **kw).state_dict())
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        torch.testing.assert_close(states[0][name], states[1][name], rtol=0, atol=0)
    torch.manual_seed(124)
    other = cls(input_shape=shape, num_classes=k, **kw).state_dict()
    assert any(
        not torch.equal(states[0][n], other[n]) for n in other if other[n].is_floating_point()
    )


def test_lenet_param_count_matches_paper():
    model = LeNet(input_shape=(1, 28, 28), num_classes=10)
    conv = 64 * 1 * 5 * 5 + 64  # 28 + 2 - 5 + 1 = 26 -> pool -> 13
    flat = 64 * 13 * 13
    assert flat == 10816
    expected = conv + (flat * 120 + 120) + (120 * 64 + 64) + 64 * 10
    assert sum(p.numel() for p in model.parameters()) == expected


def test_mlp_param_count():
    model = MLP(input_shape=(1, 28, 28), num_classes=10, hidden=[512, 256])
    expected = 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("cls", [ResNet18, VGG11])
def test_vision_models_have_batchnorm(cls):
    model = cls(input_shape=(3, 32, 32), num_classes=10)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_vision_models_small_input_adaptations():
    resnet = ResNet18(input_shape=(1, 28, 28), num_classes=10)
    assert resnet.conv1.in_channels == 1 and resnet.conv1.kernel_size == (3, 3)
    assert isinstance(resnet.maxpool, nn.Identity)
    assert "layer1.0.conv1.weight" in resnet.state_dict()
    vgg = VGG11(input_shape=(1, 28, 28), num_classes=10)
    assert vgg.features[0].in_channels == 1
    assert sum(isinstance(m, nn.MaxPool2d) for m in vgg.features) == 4  # 28->14->7->3->1
    vgg32 = VGG11(input_shape=(3, 32, 32), num_classes=10)
    assert sum(isinstance(m, nn.MaxPool2d) for m in vgg32.features) == 5


def test_resnet18_is_torchvisions_with_a_cifar_stem_and_width_scales_it():
    from torchvision.models import resnet18

    reference = resnet18(num_classes=10)
    reference.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    ours = ResNet18(input_shape=(3, 32, 32), num_classes=10)
    shapes = {k: v.shape for k, v in reference.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == shapes
    small = ResNet18(input_shape=(3, 32, 32), num_classes=10, width=8)
    assert small.conv1.out_channels == 8 and small.fc.in_features == 64
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_vgg11_width_scales_every_layer():
    small = VGG11(input_shape=(3, 32, 32), num_classes=10, width=8)
    convs = [m.out_channels for m in small.features if isinstance(m, nn.Conv2d)]
    assert convs == [8, 16, 32, 32, 64, 64, 64, 64]
    assert small.classifier[0].in_features == 64
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)
