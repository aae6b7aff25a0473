"""Activation functions by name, so that one argument swaps every nonlinearity of a network.

Smooth activations (softplus, silu, gelu, ...) give better gradients for adversarial training
(Xie et al., "Smooth Adversarial Training"). Models take an *activation factory*, a zero-argument
callable returning a fresh module, and call it once per nonlinearity.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Union

from torch import nn

from ..errors import AdvlabError
from ..registry import Registry
from .checks import check_call

ActivationFactory = Callable[[], nn.Module]
"""A zero-argument callable returning a new activation module (e.g. ``nn.ReLU``)."""

ActivationSpec = Union[str, Callable[..., nn.Module]]
"""A registered activation name, or any callable returning an ``nn.Module``."""

ACTIVATIONS: Registry[Callable[..., nn.Module]] = Registry("activation")


@ACTIVATIONS.register("relu")
def relu() -> nn.Module:
    """max(0, x): the standard, non-smooth choice."""
    return nn.ReLU()


@ACTIVATIONS.register("softplus")
def softplus() -> nn.Module:
    """log(1 + exp(x)) (beta 1): a smooth ReLU."""
    return nn.Softplus(beta=1.0)


@ACTIVATIONS.register("parametric-softplus")
def parametric_softplus(alpha: float = 10.0) -> nn.Module:
    """log(1 + exp(alpha x)) / alpha: softplus sharpened towards ReLU by ``alpha`` (default 10)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise AdvlabError(f"parametric-softplus: alpha must be a positive number, got {alpha!r}")
    return nn.Softplus(beta=float(alpha))


@ACTIVATIONS.register("silu")
def silu() -> nn.Module:
    """x * sigmoid(x) (Swish): smooth, the best of Smooth Adversarial Training."""
    return nn.SiLU()


@ACTIVATIONS.register("gelu")
def gelu() -> nn.Module:
    """x * Phi(x) (exact erf form): smooth."""
    return nn.GELU()


@ACTIVATIONS.register("elu")
def elu() -> nn.Module:
    """x for x > 0, exp(x) - 1 otherwise (alpha 1): continuously differentiable."""
    return nn.ELU(alpha=1.0)


@ACTIVATIONS.register("leaky-relu")
def leaky_relu() -> nn.Module:
    """max(0.1 x, x): ReLU with a 0.1 slope for negative inputs."""
    return nn.LeakyReLU(negative_slope=0.1)


def list_activations(pattern: str = "*") -> list[str]:
    """Registered activation names matching a shell-style pattern, sorted."""
    return ACTIVATIONS.names(pattern)


def activation_factory(activation: ActivationSpec, **kwargs: Any) -> ActivationFactory:
    """A zero-argument factory of ``activation`` built with ``kwargs``, checked by building one module.

    ``activation`` is a registered name or any callable returning an ``nn.Module`` (a class such as
    ``nn.Tanh`` works). Unknown names and bad arguments raise an AdvlabError.
    """
    if isinstance(activation, str):
        builder = ACTIVATIONS.get(activation)
        what = f"activation {activation!r}"
    elif callable(activation):
        builder = activation
        what = f"activation {getattr(activation, '__name__', activation)!r}"
    else:
        raise AdvlabError(
            f"activation must be a name or a callable returning an nn.Module, got {activation!r}; "
            f"allowed names: {', '.join(ACTIVATIONS.names())}"
        )
    check_call(builder, kwargs, what)
    factory: ActivationFactory = functools.partial(builder, **kwargs) if kwargs else builder
    probe = factory()
    if not isinstance(probe, nn.Module):
        raise AdvlabError(f"{what} returned {type(probe).__name__}, not an nn.Module")
    return factory


def create_activation(name: ActivationSpec, **kwargs: Any) -> nn.Module:
    """A new activation module: ``create_activation("parametric-softplus", alpha=5.0)``."""
    return activation_factory(name, **kwargs)()
