"""SmallCNN: the 4-conv + 3-FC network of MNIST-scale robustness work (TRADES, Zhang et al. 2019)."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import AdvlabError
from .activations import ActivationFactory
from .checks import positive_int, probability
from .factory import register_model


def flatten_size(image_size: int) -> int:
    """Features after the convolutions: two (valid conv, valid conv, max-pool 2) stages of 64 channels."""
    side = image_size
    for _ in range(2):
        side = (side - 4) // 2
    return 64 * side * side


class SmallCNN(nn.Module):
    """conv32 conv32 pool conv64 conv64 pool fc200 (dropout) fc200 fc; unpadded 3x3 convolutions."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, activation: ActivationFactory = nn.ReLU,
                 image_size: int = 28, dropout: float = 0.5) -> None:
        super().__init__()
        if image_size < 16:
            raise AdvlabError(f"small-cnn needs image_size >= 16, got {image_size}")
        self.image_size = image_size
        self.num_features = flatten_size(image_size)
        self.feature_extractor = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, 32, 3)), ("act1", activation()),
            ("conv2", nn.Conv2d(32, 32, 3)), ("act2", activation()),
            ("maxpool1", nn.MaxPool2d(2, 2)),
            ("conv3", nn.Conv2d(32, 64, 3)), ("act3", activation()),
            ("conv4", nn.Conv2d(64, 64, 3)), ("act4", activation()),
            ("maxpool2", nn.MaxPool2d(2, 2)),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(self.num_features, 200)), ("act1", activation()),
            ("drop", nn.Dropout(dropout)),
            ("fc2", nn.Linear(200, 200)), ("act2", activation()),
            ("fc3", nn.Linear(200, num_classes)),
        ]))
        for m in self.feature_extractor:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.feature_extractor(x).flatten(1)
        if features.shape[1] != self.num_features:
            raise AdvlabError(
                f"small-cnn was built for {self.image_size}x{self.image_size} inputs, got "
                f"{tuple(x.shape[-2:])}; pass image_size= to create_model"
            )
        return self.classifier(features)


@register_model("small-cnn")
def small_cnn(num_classes: int, in_channels: int, activation: ActivationFactory,
              image_size: int | None = None, dropout: float = 0.5) -> nn.Module:
    """SmallCNN; ``image_size`` defaults to 28 for one input channel, 32 otherwise."""
    if image_size is None:
        image_size = 28 if in_channels == 1 else 32
    image_size = positive_int(image_size, "small-cnn image_size")
    return SmallCNN(num_classes, in_channels, activation, image_size=image_size,
                    dropout=probability(dropout, "small-cnn dropout"))
