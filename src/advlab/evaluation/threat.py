"""Verification of adversarial examples against the threat model: in the eps-ball and in [0, 1]."""
from __future__ import annotations

import torch

from ..attacks.norms import get_norm
from ..errors import AdvlabError

ATOL = 1e-6


def check_eps(eps: float, norm: str) -> float:
    """``eps`` as a float after checking it: linf in (0, 1], l2 finite and > 0."""
    get_norm(norm)
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise AdvlabError(f"eps must be a number, got {eps!r}") from None
    if not eps > 0 or eps == float("inf"):
        raise AdvlabError(f"eps must be > 0 and finite, got {eps}")
    if norm == "linf" and eps > 1:
        raise AdvlabError(f"eps must be in (0, 1] for linf (images are in [0, 1]), got {eps}")
    return eps


def verify_threat_model(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str, attack: str,
                        atol: float = ATOL) -> torch.Tensor:
    """Per-sample perturbation sizes ``||x_adv - x||``; AdvlabError if one exceeds eps + atol or leaves [0, 1]."""
    if x_adv.shape != x.shape:
        raise AdvlabError(f"attack {attack} returned shape {tuple(x_adv.shape)} for inputs {tuple(x.shape)}")
    if not bool(torch.isfinite(x_adv).all()):
        raise AdvlabError(f"attack {attack} returned non-finite values")
    sizes = get_norm(norm).size((x_adv.double() - x.double()))
    worst = sizes.max().item() if len(sizes) else 0.0
    if worst > eps + atol:
        bad = int((sizes > eps + atol).sum())
        raise AdvlabError(f"attack {attack} broke the threat model: {bad} points with {norm} perturbation up to "
                          f"{worst:.6g} > eps {eps:.6g}")
    lo, hi = x_adv.min().item(), x_adv.max().item()
    if lo < 0 or hi > 1:
        raise AdvlabError(f"attack {attack} left the image box [0, 1]: values in [{lo:.6g}, {hi:.6g}]")
    return sizes.float()
