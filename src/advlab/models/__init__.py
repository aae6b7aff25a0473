"""Image classifiers for adversarial training, built by name.

>>> from advlab.models import create_model, list_models
>>> model = create_model("preact-resnet18", num_classes=10, activation="silu",
...                normalize=((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)))

A name ``<source>:<name>`` builds a model from a model source: ``timm:resnet18``, ``torchvision:resnet18`` or the
user's own ``<module>:<factory>`` (``advlab.models.sources``), wrapped to take [0, 1] pixels and return logits.
``create_model(..., head="projection")`` gives an encoder with a projection head (self-supervised training) and
``KNNClassifier`` classifies by k nearest neighbours over an encoder's features. Every nonlinearity comes from the activation registry (``list_activations()``), and input
normalisation is a layer of the model, so attacks always work on [0, 1] pixels.
"""
from __future__ import annotations

from .activations import (
    ACTIVATIONS, ActivationFactory, ActivationSpec, activation_factory, create_activation, list_activations,
)
from .factory import (MODELS, ModelFactory, check_model_name, create_model, list_models, normalize_stats,
                      register_model, registered_in)
from .external import ExternalModel, describe_output, select_output
from .sources import SOURCES, ModelSource, model_source, register_source, source_syntax
from .normalize import Normalize, with_normalization
from .checks import check_model_fits
from .params import count_parameters
from .representation import (FREEZE, HEADS, ContrastiveModel, FrozenEncoder, bare_network, encoder_state_dict,
                             feature_extractor, load_encoder_state, strip_head)
from .knn import KNN_METRICS, KNN_VOTES, KNNClassifier, knn_classifier

# imported for their registrations
from . import preact_resnet, resnet, resnet_imagenet, small_cnn, wide_resnet  # noqa: E402,F401  isort: skip
from .preact_resnet import PreActResNet
from .resnet import ResNet
from .small_cnn import SmallCNN
from .wide_resnet import WideResNet

__all__ = [
    "check_model_name", "normalize_stats", "registered_in", "ExternalModel", "describe_output", "select_output",
    "SOURCES", "ModelSource", "model_source", "register_source", "source_syntax", "bare_network",
    "check_model_fits", "FREEZE", "HEADS", "KNN_METRICS", "KNN_VOTES", "ContrastiveModel", "FrozenEncoder", "KNNClassifier",
    "encoder_state_dict", "feature_extractor", "knn_classifier", "load_encoder_state", "strip_head",
    "ACTIVATIONS", "MODELS", "ActivationFactory", "ActivationSpec", "ModelFactory", "Normalize",
    "PreActResNet", "ResNet", "SmallCNN", "WideResNet", "activation_factory", "count_parameters", "create_model",
    "create_activation", "list_activations", "list_models", "register_model", "with_normalization",
]
