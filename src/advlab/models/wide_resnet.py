"""WideResNet (Zagoruyko & Komodakis 2016) in the TRADES form: pre-activation basic blocks.

State-dict keys follow the TRADES code (``block1.layer.0.bn1``, ``convShortcut``, ``fc``) so its
checkpoints load; TRADES' unused ``sub_block1`` is left out (load those with ``strict=False``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import AdvlabError
from .activations import ActivationFactory
from .checks import positive_int, probability
from .factory import register_model
from .layers import conv3x3, init_resnet_weights


class WideBasicBlock(nn.Module):
    """bn-act-conv-bn-act-(dropout)-conv; the shortcut is a 1x1 conv of the activated input when shapes differ."""

    def __init__(self, in_planes: int, planes: int, stride: int, activation: ActivationFactory,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = activation()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = activation()
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = conv3x3(planes, planes)
        self.convShortcut: nn.Module | None = None  # noqa: N815 (TRADES checkpoint key)
        if stride != 1 or in_planes != planes:
            self.convShortcut = nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.act1(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        out = self.dropout(self.act2(self.bn2(self.conv1(activated))))
        return self.conv2(out) + shortcut


class WideStage(nn.Module):
    """``n`` wide blocks, the first of which may change width and stride."""

    def __init__(self, n: int, in_planes: int, planes: int, stride: int, activation: ActivationFactory,
                 drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasicBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1, activation, drop_rate)
            for i in range(n)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k: stem conv 16, three stages of widths 16k, 32k, 64k, final BN + act, pooling, fc."""

    def __init__(self, depth: int = 34, widen_factor: int = 10, num_classes: int = 10, in_channels: int = 3,
                 activation: ActivationFactory = nn.ReLU, drop_rate: float = 0.0) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise AdvlabError(f"wide-resnet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = conv3x3(in_channels, widths[0])
        self.block1 = WideStage(n, widths[0], widths[1], 1, activation, drop_rate)
        self.block2 = WideStage(n, widths[1], widths[2], 2, activation, drop_rate)
        self.block3 = WideStage(n, widths[2], widths[3], 2, activation, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.act = activation()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.act(self.bn1(out))
        return self.fc(self.pool(out).flatten(1))


@register_model("wide-resnet")
def wide_resnet(num_classes: int, in_channels: int, activation: ActivationFactory, depth: int = 34,
                widen_factor: int = 10, drop_rate: float = 0.0) -> nn.Module:
    """WRN-``depth``-``widen_factor`` with ``(depth - 4) % 6 == 0``; defaults to WRN-34-10."""
    depth = positive_int(depth, "wide-resnet depth")
    widen_factor = positive_int(widen_factor, "wide-resnet widen_factor")
    return WideResNet(depth, widen_factor, num_classes, in_channels, activation,
                      probability(drop_rate, "wide-resnet drop_rate"))


@register_model("wide-resnet-34-10")
def wide_resnet_34_10(num_classes: int, in_channels: int, activation: ActivationFactory,
                      drop_rate: float = 0.0) -> nn.Module:
    """WRN-34-10, the TRADES / MART CIFAR-10 model (about 46.2M parameters)."""
    return wide_resnet(num_classes, in_channels, activation, 34, 10, drop_rate)


@register_model("wide-resnet-28-10")
def wide_resnet_28_10(num_classes: int, in_channels: int, activation: ActivationFactory,
                      drop_rate: float = 0.0) -> nn.Module:
    """WRN-28-10 (about 36.5M parameters)."""
    return wide_resnet(num_classes, in_channels, activation, 28, 10, drop_rate)
