"""ResNet-18 for small images (He et al. 2016, CIFAR variant): 3x3 stem, stride 1, no max-pool."""
from __future__ import annotations

import torch
from torch import nn

from .activations import ActivationFactory
from .factory import register_model
from .layers import conv3x3, init_resnet_weights


class BasicBlock(nn.Module):
    """conv-bn-act-conv-bn plus a (projected when the shape changes) shortcut, then act."""

    def __init__(self, in_planes: int, planes: int, stride: int, activation: ActivationFactory) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = activation()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.act2 = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet with basic blocks; adaptive average pooling accepts any input of side >= 8."""

    def __init__(self, num_blocks: tuple[int, int, int, int] = (2, 2, 2, 2), num_classes: int = 10,
                 in_channels: int = 3, activation: ActivationFactory = nn.ReLU) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, 64)
        self.bn1 = nn.BatchNorm2d(64)
        self.act = activation()
        in_planes = 64
        stages = []
        for planes, blocks, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(BasicBlock(in_planes, planes, s, activation))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)
        init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.pool(out).flatten(1))


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int, activation: ActivationFactory) -> nn.Module:
    """ResNet-18, CIFAR variant (about 11.2M parameters for 10 classes)."""
    return ResNet((2, 2, 2, 2), num_classes, in_channels, activation)
