"""ResNet-18 and ResNet-50 for large images (He et al. 2016, the ImageNet variant): 7x7 stride-2 stem, 3x3 max-pool.

The layout of torchvision's ``resnet18`` / ``resnet50`` (``torchvision/models/resnet.py``): basic blocks [2, 2, 2, 2]
or bottleneck blocks [3, 4, 6, 3] of expansion 4 with the stride on the 3x3 convolution (ResNet v1.5), a 1x1
convolution + BatchNorm shortcut where the shape changes, global average pooling, one linear layer; so the
parameter counts are torchvision's (11,689,512 and 25,557,032 for 1,000 classes). Every nonlinearity, the
stem's included, is the registry's activation (Smooth Adversarial Training swaps ReLU for SiLU: Xie et al. 2020,
cihangxie/SmoothAdversarialTraining). Names end in ``-imagenet`` beside the CIFAR-style ``resnet18``
(3x3 stem, no max-pool), which keeps its resolution on 32-pixel images.
"""
from __future__ import annotations

import torch
from torch import nn

from .activations import ActivationFactory
from .factory import register_model
from .layers import conv3x3, init_resnet_weights


def _shortcut(in_planes: int, planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))


class BasicBlock(nn.Module):
    """conv3x3-bn-act-conv3x3-bn plus the shortcut, then act."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, activation: ActivationFactory) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = conv3x3(in_planes, planes, stride), nn.BatchNorm2d(planes), activation()
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)
        self.act2 = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """conv1x1-bn-act-conv3x3(stride)-bn-act-conv1x1(x4)-bn plus the shortcut, then act (ResNet v1.5)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, activation: ActivationFactory) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1, self.bn1, self.act1 = nn.Conv2d(in_planes, planes, 1, bias=False), nn.BatchNorm2d(planes), \
            activation()
        self.conv2, self.bn2, self.act2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes), activation()
        self.conv3, self.bn3 = nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out)
        self.shortcut = _shortcut(in_planes, out, stride)
        self.act3 = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        return self.act3(self.bn3(self.conv3(out)) + self.shortcut(x))


class ImageNetResNet(nn.Module):
    """ResNet of ``block`` with ``layers`` blocks per stage for images of side >= 32 (224 in the recipes)."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int],
                 num_classes: int = 1000, in_channels: int = 3, activation: ActivationFactory = nn.ReLU) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act = activation()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_planes, stages = 64, []
        for planes, blocks, stride in zip((64, 128, 256, 512), layers, (1, 2, 2, 2)):
            stage = []
            for s in [stride] + [1] * (blocks - 1):
                stage.append(block(in_planes, planes, s, activation))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)
        init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.maxpool(self.act(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.pool(out).flatten(1))


@register_model("resnet18-imagenet")
def resnet18_imagenet(num_classes: int, in_channels: int, activation: ActivationFactory) -> nn.Module:
    """ResNet-18, ImageNet variant (7x7 stem, max-pool): 11,689,512 parameters for 1,000 classes."""
    return ImageNetResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, activation)


@register_model("resnet50-imagenet")
def resnet50_imagenet(num_classes: int, in_channels: int, activation: ActivationFactory) -> nn.Module:
    """ResNet-50, ImageNet variant (bottlenecks, v1.5): 25,557,032 parameters for 1,000 classes."""
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, activation)
