"""The attack engine's pieces against their definitions, on tiny hand-made inputs (faults the rest of the
suite let through: see scripts/plant_faults.py)."""
from __future__ import annotations

import torch

from advlab.attacks.norms import NORMS


def test_uniform_linf_start_is_uniform_in_the_ball():
    # Madry et al.: x0 = x + U(-eps, eps)^d, coordinate-wise; E|U(-eps, eps)| = eps / 2
    x = torch.full((50, 1, 16, 16), 0.5)
    eps = torch.tensor([0.1] * 25 + [0.3] * 25)
    delta = NORMS["linf"].random(x, eps, torch.Generator().manual_seed(0))
    bound = eps[:, None]
    flat = delta.flatten(1)
    assert bool((flat.abs() <= bound + 1e-7).all())
    assert bool((flat.abs().amax(1) >= 0.95 * eps).all())  # it fills the ball, not a smaller cube
    assert torch.allclose(flat.abs().mean(1) / eps, torch.full((50,), 0.5), atol=0.1)


def test_uniform_l2_start_is_inside_the_ball():
    x = torch.full((200, 1, 4, 4), 0.5)
    eps = torch.full((200,), 0.5)
    delta = NORMS["l2"].random(x, eps, torch.Generator().manual_seed(0))
    norms = delta.flatten(1).norm(dim=1)
    assert bool((norms <= eps + 1e-6).all())
    # uniform in a d-ball: P(r <= t eps) = t^d, d = 16; the median radius is 0.5^(1/16) eps = 0.958 eps
    assert abs(norms.median().item() / 0.5 - 0.5 ** (1 / 16)) < 0.02
