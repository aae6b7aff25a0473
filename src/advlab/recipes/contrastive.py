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

from ..errors import AdvlabError
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
    if z1.shape != z2.shape or z1.dim() != 2:
        raise AdvlabError(f"nt-xent needs two (B, D) views of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if len(z1) < 2:
        raise AdvlabError("nt-xent needs a batch of at least 2 samples (the others are the negatives)")
    if not temperature > 0:
        raise AdvlabError(f"nt-xent temperature must be > 0, got {temperature!r}")
    b = len(z1)
    u = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = u @ u.T / temperature
    logits = logits.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=u.device), float("-inf"))
    positive = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(u.device)
    per_anchor = F.cross_entropy(logits, positive, reduction="none")
    return 0.5 * (per_anchor[:b] + per_anchor[b:])


def contrastive_loss(name: str) -> ContrastiveLoss:
    """The loss registered as ``name``; AdvlabError naming the allowed ones otherwise."""
    return CONTRASTIVE_LOSSES.get(name)
