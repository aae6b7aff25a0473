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


def _work(v: torch.Tensor) -> torch.Tensor:
    """(B, d) rows of ``v`` in float32 at least (float16/bfloat16 are upcast; float64 stays)."""
    flat = v.flatten(1)
    return flat if flat.dtype in (torch.float32, torch.float64) else flat.float()


def _scaled(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows divided by their max-abs (B, d), and the max-abs (B, 1): entries in [-1, 1], the max exactly 1.

    A zero row stays zero (divided by 1). A row holding an infinity keeps only the signs of its infinities,
    the direction it points to. Squaring the scaled row neither underflows nor overflows, however tiny or
    large the original entries are.
    """
    top = flat.abs().amax(1, keepdim=True)
    finite = (top > 0) & torch.isfinite(top)
    scaled = flat / torch.where(finite, top, torch.ones_like(top))
    scaled = torch.where(torch.isinf(top), torch.isinf(flat) * flat.sign(), scaled)
    return scaled, top


def l2_size(v: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm (B,) of ``v`` (B, ...), without the underflow of squaring tiny entries (norm 0 for
    entries below ~1e-23 in float32) and in float32 at least for float16/bfloat16; ``v``'s dtype out."""
    scaled, top = _scaled(_work(v))
    return (top.squeeze(1) * scaled.norm(dim=1)).to(v.dtype)


def l2_unit(v: torch.Tensor) -> torch.Tensor:
    """``v / ||v||_2`` per sample, of norm 1 for every non-zero row however tiny its entries; zero rows stay
    zero, never NaN (for finite or infinite ``v``). Same shape and dtype as ``v`` (B, ...)."""
    scaled, _ = _scaled(_work(v))
    n = scaled.norm(dim=1, keepdim=True)  # >= 1 for a non-zero row, 0 for a zero row
    return (scaled / torch.where(n > 0, n, torch.ones_like(n))).reshape(v.shape).to(v.dtype)


class L2:
    """The L2 ball: normalised-gradient steps, radial projection.

    Norms and directions are computed after dividing each row by its max-abs (see ``l2_unit``), so a step
    has its full length even for gradients of norm 1e-18 (a confident model) and the projection never
    divides by an underflowed norm.
    """

    name = "l2"

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-sample L2 norm of ``delta``."""
        return l2_size(delta)

    def random(self, x: torch.Tensor, eps: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A perturbation drawn uniformly from the ball of radius ``eps`` (direction x radius)."""
        d = x[0].numel()
        direction = l2_unit(_rand(x.shape, x, generator, normal=True))
        radius = _rand(x.shape[:1], x, generator, normal=False) ** (1.0 / d)
        return direction * _view(radius * eps, x)

    def step(self, grad: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """The move ``size * grad / ||grad||``: of length ``|size|`` for any non-zero gradient, zero for a zero
        gradient."""
        return _view(size, grad) * l2_unit(grad)

    def project(self, delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The closest point of the ball to ``delta``: rows longer than eps scaled to length eps, others kept."""
        n = l2_size(_work(delta))
        e = eps.to(n.dtype)
        factor = torch.where(n > e, e / torch.where(n > e, n, torch.ones_like(n)), torch.ones_like(n))
        return delta * _view(factor.to(delta.dtype), delta)


NORMS = {"linf": Linf(), "l2": L2()}


def get_norm(norm: str) -> Linf | L2:
    """The norm object named ``norm`` (``linf`` or ``l2``)."""
    return lookup(NORMS, norm, "norm")


def l2_ball_like_linf(eps_linf: float, dim: int) -> float:
    """The L2 radius of the smallest L2 ball holding the L-infinity ball of radius ``eps_linf`` in ``dim`` dims."""
    return eps_linf * math.sqrt(dim)
