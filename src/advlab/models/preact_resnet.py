"""Pre-activation ResNet-18 (He et al. 2016b) as used by Rice et al. 2020: final BN + act before pooling."""
from __future__ import annotations

import torch
from torch import nn

from .activations import ActivationFactory
from .factory import register_model
from .layers import conv3x3, init_resnet_weights


class PreActBlock(nn.Module):
    """bn-act-conv-bn-act-conv; a projecting shortcut takes the activated input when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int, activation: ActivationFactory) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = activation()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = activation()
        self.conv2 = conv3x3(planes, planes)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.act2(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """CIFAR pre-activation ResNet; adaptive average pooling accepts any input of side >= 8."""

    def __init__(self, num_blocks: tuple[int, int, int, int] = (2, 2, 2, 2), num_classes: int = 10,
                 in_channels: int = 3, activation: ActivationFactory = nn.ReLU) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, 64)
        in_planes = 64
        stages = []
        for planes, blocks, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(PreActBlock(in_planes, planes, s, activation))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(512)
        self.act = activation()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)
        init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.act(self.bn(out))
        return self.linear(self.pool(out).flatten(1))


@register_model("preact-resnet18")
def preact_resnet18(num_classes: int, in_channels: int, activation: ActivationFactory) -> nn.Module:
    """Pre-activation ResNet-18 (about 11.2M parameters for 10 classes)."""
    return PreActResNet((2, 2, 2, 2), num_classes, in_channels, activation)
