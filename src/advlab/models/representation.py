"""Encoders: any classifier without its last linear layer, with a projection head for self-supervised training.

Every built-in backbone (and any ``nn.Module`` classifier whose last ``nn.Linear``, in module order, maps its
penultimate features to the logits) becomes an encoder by replacing that layer with ``nn.Identity``
(:func:`strip_head`). Three models are built on that:

- :class:`ContrastiveModel`: encoder + projection MLP; ``forward`` gives the projection (B, projection_dim)
  that a contrastive objective reads, ``features`` the encoder's representation (B, feature_dim) that a
  k-nearest-neighbour classifier reads (SimCLR, Chen et al. 2020: the head is dropped after pre-training).
- :class:`FrozenEncoder`: a classifier whose encoder is frozen (no gradients, batch norm in eval mode) so only
  its last linear layer trains: the linear evaluation of a representation (SLF / ALF in the robust
  self-supervised benchmark).
- :func:`feature_extractor`: the module computing a model's representation for a kNN classifier: the
  encoder of a ContrastiveModel, the penultimate features of a classifier.

``encoder_state_dict`` / ``load_encoder_state`` move encoder weights between these models (keys relative to
the backbone, without its last linear layer), so a classifier can start from a self-supervised run.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import AdvlabError
from .external import ExternalModel
from .normalize import Normalize

HEADS = ("linear", "projection")
"""What a model built by ``create_model`` ends with: the backbone's ``linear`` classifier (logits), or a
``projection`` head over its encoder (a representation for contrastive training)."""

FREEZE = ("none", "encoder")
"""What ``create_model`` freezes: nothing, or the ``encoder`` (all but the last linear layer; linear evaluation)."""


def _declared_classifier(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The classifier a network declares with timm's ``get_classifier()`` (timm's models, and any module that
    offers it), when it is an ``nn.Linear`` inside ``model``: ``(name, module)``; else None."""
    names = {id(m): name for name, m in model.named_modules()}
    for _, module in model.named_modules():
        get = getattr(module, "get_classifier", None)
        if callable(get):
            try:
                head = get()
            except Exception:  # a model whose get_classifier needs arguments or fails: fall back to module order
                return None
            if isinstance(head, nn.Linear) and id(head) in names:
                return names[id(head)], head
            return None
    return None


def final_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The name and module of ``model``'s classifier: the ``nn.Linear`` a network declares with timm's
    ``get_classifier()``, else its last ``nn.Linear`` in module order (the logit layer of every built-in backbone
    and of torchvision's ResNets, VGGs, MobileNets, EfficientNets, ViTs). AdvlabError when there is none (a
    convolutional classifier, e.g. torchvision's SqueezeNet: such a model cannot be stripped to an encoder)."""
    declared = _declared_classifier(model)
    if declared is not None:
        return declared
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise AdvlabError(f"{type(model).__name__} has no nn.Linear layer to take as its classifier, so its "
                          "penultimate features cannot be found; give an encoder that returns features and its "
                          "feature_dim instead")
    return found[-1]


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def strip_head(model: nn.Module) -> tuple[nn.Module, int]:
    """``model`` with its last linear layer replaced by ``nn.Identity`` (in place), and the width of the
    features that layer read: ``(encoder, feature_dim)``. The encoder maps (B, C, H, W) pixels to
    (B, feature_dim) features; its state-dict keys are the backbone's without that layer's."""
    name, linear = final_linear(model)
    _set_submodule(model, name, nn.Identity())
    return model, linear.in_features


class ContrastiveModel(nn.Module):
    """An encoder and a projection head: ``forward(x)`` -> (B, projection_dim), ``features(x)`` -> (B, feature_dim).

    The projection is SimCLR's MLP: Linear(feature_dim, hidden) - ReLU - Linear(hidden, projection_dim), hidden
    defaulting to feature_dim (Chen et al. 2020, sec. 2.1). ``encoder``: any module mapping pixels in [0, 1]
    (B, C, H, W) to features (B, feature_dim), e.g. ``strip_head(create_model("small-cnn"))[0]``.
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, projection_dim: int = 128,
                 hidden_dim: int | None = None) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise AdvlabError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
        for value, name in ((feature_dim, "feature_dim"), (projection_dim, "projection_dim")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AdvlabError(f"{name} must be a positive integer, got {value!r}")
        hidden = feature_dim if hidden_dim is None else hidden_dim
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.projection = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(inplace=False),
                                        nn.Linear(hidden, projection_dim))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The representation (B, feature_dim) of pixels x (B, C, H, W) in [0, 1]."""
        out = self.encoder(x)
        if out.dim() != 2 or out.shape[1] != self.feature_dim:
            raise AdvlabError(f"the encoder returned {tuple(out.shape)}, expected (B, {self.feature_dim}) features")
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(x))


class FrozenEncoder(nn.Module):
    """A classifier whose encoder is frozen: only its last linear layer has gradients, and the rest stays in
    eval mode (batch-norm statistics unchanged) even when the model is put in train mode. ``forward`` is the
    classifier's. The state-dict keys are the classifier's under ``model.``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.head_name, head = final_linear(model)
        head_params = {id(p) for p in head.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in head_params)

    def train(self, mode: bool = True) -> "FrozenEncoder":
        super().train(mode)
        self.model.eval()
        self.model.get_submodule(self.head_name).train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def backbone(model: nn.Module) -> nn.Module:
    """The backbone inside the wrappers of this module (ContrastiveModel: its encoder; FrozenEncoder: its
    classifier); the model itself otherwise."""
    if isinstance(model, ContrastiveModel):
        return model.encoder
    if isinstance(model, FrozenEncoder):
        return model.model
    return model


def bare_network(model: nn.Module) -> nn.Module:
    """The network inside advlab's wrappers, whose state-dict keys are those of weights made elsewhere: the
    backbone (:func:`backbone`) without its input normalisation (``with_normalization``) or its
    :class:`~advlab.models.external.ExternalModel` wrapper."""
    inner = backbone(model)
    if isinstance(inner, ExternalModel):
        return inner.model
    if isinstance(inner, nn.Sequential) and isinstance(getattr(inner, "normalize", None), Normalize) \
            and isinstance(getattr(inner, "model", None), nn.Module):
        return inner.model
    return inner


def feature_extractor(model: nn.Module) -> nn.Module:
    """A module mapping pixels (B, C, H, W) in [0, 1] to ``model``'s representation (B, D): the encoder of a
    ContrastiveModel (shared, not copied), else a copy of the classifier with its last linear layer replaced
    by ``nn.Identity`` (its penultimate features; ``model`` is left as it is)."""
    if isinstance(model, ContrastiveModel):
        return model.encoder
    return strip_head(copy.deepcopy(backbone(model)))[0]


def encoder_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's weights with keys relative to the backbone, without the last linear layer of a
    classifier (a ContrastiveModel's encoder has none)."""
    inner = backbone(model)
    state = inner.state_dict()
    if isinstance(model, ContrastiveModel):
        return state
    head, _ = final_linear(inner)
    return {k: v for k, v in state.items() if not k.startswith(head + ".")}


def load_encoder_state(model: nn.Module, state: dict[str, torch.Tensor], source: str = "the checkpoint") -> None:
    """Load encoder weights (from :func:`encoder_state_dict`) into ``model``'s backbone; its last linear layer
    (of a classifier) keeps its own initialisation. AdvlabError naming ``source`` and the first mismatched key
    when the encoders differ."""
    inner = backbone(model)
    own = encoder_state_dict(model)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise AdvlabError(f"{source} holds another encoder: {what} "
                          f"({len(missing)} missing, {len(unexpected)} unexpected keys)")
    for key, value in state.items():
        if tuple(own[key].shape) != tuple(value.shape):
            raise AdvlabError(f"{source} holds another encoder: {key} is {tuple(value.shape)}, this model's "
                              f"{tuple(own[key].shape)}")
    inner.load_state_dict(state, strict=False)
