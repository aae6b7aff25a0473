"""Threat-model geometry: random start in the ball, gradient step, projection, size of a perturbation.

``eps`` and step sizes are per-sample tensors of shape (B,) here (``per_sample`` builds them from a
float); they broadcast over the remaining dimensions of the batch.
"""
from __future__ import annotations

import math

import torch

from ..errors import AdvlabError
from ..registry import lookup


def per_sample(value: float | torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """``value`` (a number, a 0-d or a (B,) tensor) as a (B,) tensor of ``x``'s dtype and device."""
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise AdvlabError(f"{name} must be a number or a tensor of shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


def _view(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, ...) to broadcast against ``x``."""
    return t.reshape(-1, *([1] * (x.dim() - 1)))


def _rand(shape: torch.Size, x: torch.Tensor, generator: torch.Generator | None, normal: bool) -> torch.Tensor:
    """Uniform [0,1) or standard normal noise drawn on the generator's device, returned on x's device."""
    device = generator.device if generator is not None else x.device
    fn = torch.randn if normal else torch.rand
    return fn(shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


class Linf:
    """The L-infinity ball: sign-gradient steps, coordinate-wise clipping."""

    name = "linf"

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-sample L-infinity norm of ``delta``."""
        return delta.flatten(1).abs().amax(1)

    def random(self, x: torch.Tensor, eps: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A perturbation drawn uniformly from the ball of radius ``eps``."""
        return (2 * _rand(x.shape, x, generator, normal=False) - 1) * _view(eps, x)

    def step(self, grad: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """The move ``size * sign(grad)`` (``size`` may be negative to descend)."""
        return _view(size, grad) * grad.sign()

    def project(self, delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The closest point of the ball to ``delta``."""
        e = _view(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e)


class L2:
    """The L2 ball: normalised-gradient steps, radial projection."""

    name = "l2"

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-sample L2 norm of ``delta``."""
        return delta.flatten(1).norm(dim=1)

    def random(self, x: torch.Tensor, eps: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A perturbation drawn uniformly from the ball of radius ``eps`` (direction x radius)."""
        d = x[0].numel()
        direction = _rand(x.shape, x, generator, normal=True)
        direction = direction / _view(direction.flatten(1).norm(dim=1).clamp_min(1e-12), x)
        radius = _rand(x.shape[:1], x, generator, normal=False) ** (1.0 / d)
        return direction * _view(radius * eps, x)

    def step(self, grad: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """The move ``size * grad / ||grad||`` (zero for a zero gradient)."""
        g = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        return grad * _view(size / g, grad)

    def project(self, delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The closest point of the ball to ``delta``."""
        n = self.size(delta)
        factor = torch.clamp(eps / n.clamp_min(1e-12), max=1.0)
        return delta * _view(factor, delta)


NORMS = {"linf": Linf(), "l2": L2()}


def get_norm(norm: str) -> Linf | L2:
    """The norm object named ``norm`` (``linf`` or ``l2``)."""
    return lookup(NORMS, norm, "norm")


def l2_ball_like_linf(eps_linf: float, dim: int) -> float:
    """The L2 radius of the smallest L2 ball holding the L-infinity ball of radius ``eps_linf`` in ``dim`` dims."""
    return eps_linf * math.sqrt(dim)
