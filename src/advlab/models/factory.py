"""The model registry and ``create_model``: every architecture is built by name.

A model factory is any callable ``factory(num_classes=..., in_channels=..., activation=..., **kwargs)``
returning an ``nn.Module``; ``activation`` is a zero-argument callable that returns a fresh activation
module, to be called once per nonlinearity. Register one with ``@register_model("name")``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from torch import nn

from ..errors import AdvlabError
from ..registry import Registry
from .activations import ActivationSpec, activation_factory
from .checks import check_call, positive_int
from .normalize import Normalize, with_normalization
from .representation import FREEZE, HEADS, ContrastiveModel, FrozenEncoder, strip_head

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")

_FIXED = ("num_classes", "in_channels", "activation")


def register_model(name: str, factory: Optional[ModelFactory] = None, *, overwrite: bool = False):
    """Register a model factory under ``name``; usable as ``@register_model("name")``."""
    return MODELS.register(name, factory, overwrite=overwrite)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    return MODELS.names(pattern)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, activation: ActivationSpec = "relu",
           *, normalize: Optional[tuple[Sequence[float] | float, Sequence[float] | float]] = None,
           activation_kwargs: Optional[dict[str, Any]] = None, head: str = "linear", projection_dim: int = 128,
           freeze: str = "none", **kwargs: Any) -> nn.Module:
    """Build model ``name`` with every nonlinearity from ``activation``, in train mode.

    ``head`` (:data:`HEADS`): ``linear``, the backbone's classifier (logits (B, num_classes)); or
    ``projection``, a :class:`ContrastiveModel` over the backbone's encoder (output (B, projection_dim),
    ``model.features(x)`` the representation). ``freeze`` (:data:`FREEZE`): ``encoder`` wraps a linear-head
    model in :class:`FrozenEncoder` (only the last linear layer trains: linear evaluation).

    ``normalize=(mean, std)`` puts a :class:`Normalize` layer in front (``Sequential(normalize, model)``)
    so the model takes [0, 1] pixels; ``activation_kwargs`` go to the activation
    (``activation="parametric-softplus", activation_kwargs={"alpha": 5}``); other keyword arguments go
    to the model's factory. Unknown names and bad arguments raise an AdvlabError.
    """
    factory = MODELS.get(name)
    if head not in HEADS:
        raise AdvlabError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    if freeze not in FREEZE:
        raise AdvlabError(f"freeze must be one of {', '.join(FREEZE)}, got {freeze!r}")
    if freeze != "none" and head != "linear":
        raise AdvlabError(f"freeze={freeze!r} trains the last linear layer alone; it needs head='linear'")
    projection_dim = positive_int(projection_dim, "projection_dim")
    num_classes = positive_int(num_classes, "num_classes")
    in_channels = positive_int(in_channels, "in_channels")
    if activation_kwargs is not None and not isinstance(activation_kwargs, dict):
        raise AdvlabError(f"activation_kwargs must be a dict, got {activation_kwargs!r}")
    act = activation_factory(activation, **(activation_kwargs or {}))
    args = dict(kwargs, num_classes=num_classes, in_channels=in_channels, activation=act)
    check_call(factory, args, f"model {name!r}", fixed=_FIXED)
    model = factory(**args)
    if not isinstance(model, nn.Module):
        raise AdvlabError(f"model factory {name!r} returned {type(model).__name__}, not an nn.Module")
    if normalize is not None:
        try:
            mean, std = normalize
        except (TypeError, ValueError):
            raise AdvlabError(f"normalize must be a (mean, std) pair, got {normalize!r}") from None
        layer = Normalize(mean, std)
        if layer.num_channels not in (1, in_channels):
            raise AdvlabError(f"normalize has {layer.num_channels} channels but in_channels is {in_channels}")
        model = with_normalization(model, mean, std)
    if head == "projection":
        encoder, feature_dim = strip_head(model)
        model = ContrastiveModel(encoder, feature_dim, projection_dim)
    if freeze == "encoder":
        model = FrozenEncoder(model)
    return model
