"""Contrastive losses between two views of a batch, by name: the mutual-information bounds that
self-supervised objectives and attacks use.

A loss is ``loss(z1, z2, temperature) -> (B,)``: per-sample losses for representations z1, z2 (B, D) of two
views of the same B images, where (z1[i], z2[i]) is the positive pair and every other representation in the
2B is a negative. Minimising it maximises InfoNCE's lower bound on the mutual information between the views
(van den Oord et al. 2018). ``nt-xent`` is SimCLR's (Chen et al. 2020); the paper of seed 004 used AMDIM's
multi-scale NCE, of the same family: register another form in :data:`CONTRASTIVE_LOSSES` to add it.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import AdvlabError, ConfigError
from ..registry import Registry

ContrastiveLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]

CONTRASTIVE_LOSSES: Registry[ContrastiveLoss] = Registry("contrastive loss")


@CONTRASTIVE_LOSSES.register("nt-xent")
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy, per sample (B,).

    With u = the 2B rows of (z1, z2) normalised to unit length and s_ij = u_i . u_j / temperature, anchor i's
    loss is -log( exp(s_i,p(i)) / sum_{k != i} exp(s_ik) ), p(i) its other view; sample b's loss is the mean of
    its two anchors' (b and B + b). z1, z2: (B, D) float, B >= 2 (a batch of one has no negative);
    temperature > 0. AdvlabError otherwise. Computed in float32.
    """
    _check_views("nt-xent", z1, z2, temperature)
    b = len(z1)
    u = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = u @ u.T / temperature
    logits = logits.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=u.device), float("-inf"))
    positive = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(u.device)
    per_anchor = F.cross_entropy(logits, positive, reduction="none")
    return 0.5 * (per_anchor[:b] + per_anchor[b:])


@CONTRASTIVE_LOSSES.register("info-nce")
def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """InfoNCE as CPC and AMDIM write it, per sample (B,): each anchor is scored against the B representations
    of the *other* view only (its positive and B - 1 negatives; no same-view negatives, unlike nt-xent).

    With u, v = z1, z2 normalised to unit length and s_ij = u_i . v_j / temperature, sample b's loss is the mean
    of -log softmax_j(s_bj)[b] (z1 anchors) and -log softmax_i(s_ib)[b] (z2 anchors). AMDIM itself scores raw
    dot products soft-clipped by tclip tanh(s / tclip) between global and local feature maps of several scales;
    a (B, D) representation has no local maps, so this is its global-to-global form with a temperature.
    Shapes, checks and float32 as :func:`nt_xent`.
    """
    _check_views("info-nce", z1, z2, temperature)
    u, v = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    logits = u @ v.T / temperature
    target = torch.arange(len(z1), device=u.device)
    return 0.5 * (F.cross_entropy(logits, target, reduction="none")
                  + F.cross_entropy(logits.T, target, reduction="none"))


def _check_views(name: str, z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> None:
    if z1.shape != z2.shape or z1.dim() != 2:
        raise AdvlabError(f"{name} needs two (B, D) views of the same shape, got {tuple(z1.shape)} and "
                          f"{tuple(z2.shape)}")
    if len(z1) < 2:
        raise AdvlabError(f"{name} needs a batch of at least 2 samples (the others are the negatives)")
    if not temperature > 0:
        raise AdvlabError(f"{name} temperature must be > 0, got {temperature!r}")


def contrastive_loss(name: str) -> ContrastiveLoss:
    """The loss registered as ``name``; AdvlabError naming the allowed ones otherwise."""
    return CONTRASTIVE_LOSSES.get(name)


def check_loss_name(name: str, key: str) -> None:
    """ConfigError naming the config ``key`` unless ``name`` is a registered contrastive loss."""
    if name not in CONTRASTIVE_LOSSES:
        raise ConfigError(f"{key}: unknown contrastive loss {name!r}; allowed: {', '.join(CONTRASTIVE_LOSSES.names())}")


@torch.no_grad()
def contrastive_top1(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """(B,) bool: whether z2[i] is the most similar (cosine) to z1[i] of the other 2B - 1 representations of
    (z1, z2) (B, D): SimCLR's instance-discrimination accuracy, the training accuracy of a contrastive
    objective (a tie with a negative counts as wrong)."""
    b = len(z1)
    u = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sims = u[:b] @ u.T  # (B, 2B): anchor z1[i] against every row
    sims[torch.arange(b), torch.arange(b)] = float("-inf")  # not itself
    positive = sims[torch.arange(b), torch.arange(b, 2 * b)]
    others = sims.clone()
    others[torch.arange(b), torch.arange(b, 2 * b)] = float("-inf")
    return positive > others.max(1).values
