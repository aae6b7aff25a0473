"""The model registry and ``create_model``: every architecture is built by name.

A model factory is any callable ``factory(num_classes=..., in_channels=..., activation=..., **kwargs)``
returning an ``nn.Module``; ``activation`` is a zero-argument callable that returns a fresh activation
module, to be called once per nonlinearity. Register one with ``@register_model("name")``. A name of the form
``<source>:<name>`` builds a model from a model source instead (timm, torchvision, or the user's
``<module>:<factory>``: ``advlab.models.sources``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Optional, Sequence

from torch import nn

from ..errors import AdvlabError
from ..registry import Registry
from .activations import ActivationSpec, activation_factory
from .checks import check_call, positive_int
from .external import ExternalModel, OutputKey, check_output_key
from .normalize import Normalize, with_normalization
from .representation import FREEZE, HEADS, ContrastiveModel, FrozenEncoder, strip_head
from .sources import build_source_model, import_user_module, model_source, source_syntax

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")

_FIXED = ("num_classes", "in_channels", "activation")
_OWN_MODULES = ("advlab.",)  # factories registered by advlab itself: no module to record


def register_model(name: str, factory: Optional[ModelFactory] = None, *, overwrite: bool = False):
    """Register a model factory under ``name``; usable as ``@register_model("name")``.

    A run of a model registered this way records the factory's module (``registered_in`` of its model spec), so
    ``advlab eval`` and ``load_model`` in another process import that module to find it. Register in an
    importable module, not in a script run as ``__main__``; or name the factory itself: ``model.name=<module>:<factory>``.
    """
    if ":" in name:
        raise AdvlabError(f"model name {name!r}: ':' separates a model source from its name; register without it")
    return MODELS.register(name, factory, overwrite=overwrite)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted (model sources not included: see
    ``advlab.models.sources.source_syntax()``)."""
    return MODELS.names(pattern)


def registered_in(name: str) -> str | None:
    """The module that registered the model ``name`` when it is not one of advlab's own (``__main__`` for a
    script), else None (advlab's, a model source, or not registered)."""
    if ":" in name or name not in MODELS:
        return None
    module = getattr(MODELS.get(name), "__module__", None)
    if not isinstance(module, str) or module.startswith(_OWN_MODULES):
        return None
    return module


def _not_registered(name: str, module: str | None) -> AdvlabError:
    allowed = ", ".join([*MODELS.names(), *source_syntax()])
    text = f"unknown model {name!r}; allowed: {allowed}"
    if module == "__main__":
        return AdvlabError(f"{text}. {name!r} was registered with register_model by the script that trained the run "
                           "(__main__), which another process cannot import: move the register_model call into an "
                           "importable module, or name the factory: model.name=<module>:<factory>")
    if module:
        return AdvlabError(f"{text}. {name!r} was registered by module {module!r}, which was imported but did not "
                           "register it")
    return AdvlabError(f"{text}. A model registered with register_model in another process is unknown here: import "
                       "the module that registers it first, or name its factory: model.name=<module>:<factory>")


def check_model_name(name: Any) -> None:
    """AdvlabError unless ``name`` is a registered model or a well-formed ``<source>:<name>`` (the source's package
    and the module are not imported here)."""
    if not isinstance(name, str):
        raise AdvlabError(f"a model name is a string, got {name!r}")
    if model_source(name) is None and name not in MODELS:
        raise _not_registered(name, None)


def _registered(name: str, module: str | None) -> ModelFactory:
    """The factory registered as ``name``, importing ``module`` (the one that registered it in the training
    process) first when it is not registered yet."""
    if name not in MODELS and module and module != "__main__":
        import_user_module(module, f"model {name!r} (registered by module {module!r})")
    if name not in MODELS:
        raise _not_registered(name, module)
    return MODELS.get(name)


def normalize_stats(normalize: Any) -> tuple[Sequence[float], Sequence[float]] | None:
    """``(mean, std)`` from ``normalize``: None, a ``(mean, std)`` pair or a mapping ``{"mean": ..., "std": ...}``
    (pixel units, one value or one per channel); AdvlabError otherwise."""
    if normalize is None:
        return None
    if isinstance(normalize, Mapping):
        if set(normalize) != {"mean", "std"}:
            raise AdvlabError(f"normalize must have the keys mean and std, got {sorted(normalize)}")
        return normalize["mean"], normalize["std"]
    try:
        mean, std = normalize
    except (TypeError, ValueError):
        raise AdvlabError(f"normalize must be a (mean, std) pair or {{mean, std}}, got {normalize!r}") from None
    return mean, std


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, activation: ActivationSpec = "relu",
           *, normalize: Any = None, output: OutputKey = None,
           activation_kwargs: Optional[dict[str, Any]] = None, head: str = "linear", projection_dim: int = 128,
           freeze: str = "none", registered_in: str | None = None, **kwargs: Any) -> nn.Module:
    """Build model ``name`` with every nonlinearity from ``activation``, in train mode.

    ``name``: a registered model (``list_models()``), or ``<source>:<name>`` from a model source
    (``timm:resnet18``, ``torchvision:resnet18``, ``mynets:build``; ``advlab.models.sources``), whose network is
    wrapped in :class:`ExternalModel` (pixels in [0, 1] in, logits out); a model source takes no ``activation``
    (its own options, e.g. timm's ``act_layer``, go in ``kwargs``).

    ``head`` (:data:`HEADS`): ``linear``, the backbone's classifier (logits (B, num_classes)); or
    ``projection``, a :class:`ContrastiveModel` over the backbone's encoder (output (B, projection_dim),
    ``model.features(x)`` the representation). ``freeze`` (:data:`FREEZE`): ``encoder`` wraps a linear-head
    model in :class:`FrozenEncoder` (only the last linear layer trains: linear evaluation).

    ``normalize=(mean, std)`` (or ``{"mean": ..., "std": ...}``) puts a :class:`Normalize` layer in front
    (``Sequential(normalize, model)``, or inside the ExternalModel) so the model takes [0, 1] pixels;
    ``output``: the key or index of the logits in a network's dict or tuple output; ``activation_kwargs`` go to
    the activation (``activation="parametric-softplus", activation_kwargs={"alpha": 5}``); other keyword
    arguments go to the model's factory. ``registered_in``: the module that registered ``name`` in the process
    that trained it (a checkpoint's model spec records it), imported when ``name`` is not registered yet.
    Unknown names and bad arguments raise an AdvlabError.
    """
    found = model_source(name)
    if head not in HEADS:
        raise AdvlabError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    if freeze not in FREEZE:
        raise AdvlabError(f"freeze must be one of {', '.join(FREEZE)}, got {freeze!r}")
    if freeze != "none" and head != "linear":
        raise AdvlabError(f"freeze={freeze!r} trains the last linear layer alone; it needs head='linear'")
    projection_dim = positive_int(projection_dim, "projection_dim")
    num_classes = positive_int(num_classes, "num_classes")
    in_channels = positive_int(in_channels, "in_channels")
    output = check_output_key(output, "output")
    stats = normalize_stats(normalize)
    if activation_kwargs is not None and not isinstance(activation_kwargs, dict):
        raise AdvlabError(f"activation_kwargs must be a dict, got {activation_kwargs!r}")
    if found is None:
        factory = _registered(name, registered_in)
        act = activation_factory(activation, **(activation_kwargs or {}))
        args = dict(kwargs, num_classes=num_classes, in_channels=in_channels, activation=act)
        check_call(factory, args, f"model {name!r}", fixed=_FIXED)
        model = factory(**args)
        if not isinstance(model, nn.Module):
            raise AdvlabError(f"model factory {name!r} returned {type(model).__name__}, not an nn.Module")
    else:
        if activation != "relu" or activation_kwargs:
            raise AdvlabError(f"activation {activation!r}: advlab's activations apply to its own architectures; "
                              f"{name} takes its own as an option (e.g. timm's act_layer)")
        model = build_source_model(name, num_classes, in_channels, kwargs)
    if stats is not None:
        layer = Normalize(*stats)
        if layer.num_channels not in (1, in_channels):
            raise AdvlabError(f"normalize has {layer.num_channels} channels but in_channels is {in_channels}")
    if found is not None or output is not None:
        model = ExternalModel(model, name, stats, output)
    elif stats is not None:
        model = with_normalization(model, *stats)
    if head == "projection":
        encoder, feature_dim = strip_head(model)
        model = ContrastiveModel(encoder, feature_dim, projection_dim)
    if freeze == "encoder":
        model = FrozenEncoder(model)
    return model
