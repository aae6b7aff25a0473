"""Verification of adversarial examples against the threat model: in the eps-ball and in [0, 1]."""
from __future__ import annotations

import torch

from ..attacks.norms import get_norm
from ..errors import AdvlabError

ATOL = 1e-6


def eps_hint(eps: float) -> str:
    """The pixel-unit reading of an eps given on the 0..255 scale: ``did you mean 8/255 (= 0.03137)?``."""
    return f"did you mean {eps:g}/255 (= {eps / 255:.4g})?" if eps <= 255 else "give it as a fraction of 1, e.g. 8/255"


def parse_eps(text: str | float) -> float:
    """eps from a command-line value: a number (``0.0314``) or a fraction (``8/255``); AdvlabError otherwise.
    The value is not checked against a norm (:func:`check_eps`)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    value = str(text).strip()
    try:
        if "/" in value:
            top, bottom = value.split("/", 1)
            return float(top) / float(bottom)
        return float(value)
    except (ValueError, ZeroDivisionError):
        raise AdvlabError(f"eps must be a number or a fraction such as 8/255, got {text!r}") from None


def check_eps(eps: float, norm: str) -> float:
    """``eps`` as a float after checking it: linf in (0, 1] (pixel units; a value above 1 is refused with the hint
    that it reads as 8/255), l2 finite and > 0."""
    get_norm(norm)
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise AdvlabError(f"eps must be a number, got {eps!r}") from None
    if not eps > 0 or eps == float("inf"):
        raise AdvlabError(f"eps must be > 0 and finite, got {eps}")
    if norm == "linf" and eps > 1:
        raise AdvlabError(f"eps is in pixel units in [0, 1] (linf: in (0, 1]), got {eps:g}: {eps_hint(eps)}")
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
