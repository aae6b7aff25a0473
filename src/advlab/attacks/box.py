"""The image box [0, 1]: inputs a rounding error outside it are clamped and counted, inputs further out refused.

Images that went through a normalise / denormalise round trip (``(x - mean) / std * std + mean``) come back a
few units in the last place off: -3e-8 instead of 0 in float32 (torchattacks issue #136). Such values are no
perturbation and no other data, so every place images enter an attack or an evaluation (``attacks.pgd``,
``evaluate``, the AutoAttack adapter, ``advlab eval``) clamps them to [0, 1] and counts them, and refuses
values further out with an error that says how far outside they are.

The tolerance, :func:`box_tolerance`: ``BOX_TOLERANCE`` = 1e-6 for float32 and float64, one unit in the last
place at 1 for float16 / bfloat16 (9.8e-4 / 7.8e-3). 1e-6 is 8 float32 units in the last place at 1 (1.2e-7
each) and 10x the error of a float32 round trip through a std of 0.2 (values up to 5, units of 4.8e-7,
times 0.2); it is 1/3900 of one 8-bit intensity level (1/255), so clamping never changes what an 8-bit image
can hold, and it is far below any perturbation budget. In half precision the smallest rounding error near 1
is one unit in the last place (the next number above 1 is 1 + eps), so the tolerance is that unit.
"""
from __future__ import annotations

import torch

from ..errors import AdvlabError

BOX_TOLERANCE = 1e-6
"""How far outside [0, 1] a float32 / float64 value may lie and still count as a rounding error (module docs)."""


def box_tolerance(dtype: torch.dtype) -> float:
    """The tolerance for images of ``dtype``: max(``BOX_TOLERANCE``, the dtype's machine epsilon) (1e-6 for
    float32 / float64, one unit in the last place at 1 for float16 / bfloat16)."""
    return max(BOX_TOLERANCE, torch.finfo(dtype).eps)


def box_stats(x: torch.Tensor) -> torch.Tensor:
    """(min, max, number of values outside [0, 1], number of NaNs) of ``x`` as a float64 tensor (4,) on x's
    device (no sync: read it together with other checks). An empty ``x`` gives (0, 0, 0, 0)."""
    if x.numel() == 0:
        return torch.zeros(4, dtype=torch.float64, device=x.device)
    outside = ((x < 0) | (x > 1)).sum()
    return torch.stack([x.min().double(), x.max().double(), outside.double(), x.isnan().sum().double()])


def box_count(stats: list[float], dtype: torch.dtype, what: str) -> int:
    """From :func:`box_stats` read on the host: the number of values outside [0, 1], all within the tolerance
    of ``dtype`` (they are clamped).

    Raises:
        AdvlabError: a NaN or infinity, or a value beyond the tolerance: the message gives the smallest and
            largest value found and how far below 0 / above 1 they are.
    """
    lo, hi, outside, nans = stats
    if nans or lo != lo or hi != hi or abs(lo) == float("inf") or abs(hi) == float("inf"):
        raise AdvlabError(f"{what} must hold finite values in [0, 1], found {'NaN' if nans else 'infinite'} values")
    tol = box_tolerance(dtype)
    if lo < -tol or hi > 1 + tol:
        far = []
        if lo < 0:
            far.append(f"{-lo:.3g} below 0")
        if hi > 1:
            far.append(f"{hi - 1:.3g} above 1")
        raise AdvlabError(f"{what} must hold values in [0, 1] (values within {tol:.2g} of it, rounding errors, are "
                          f"clamped); found values in [{lo:.6g}, {hi:.6g}], {' and '.join(far)} (normalised images go in "
                          "unnormalised, the normalisation inside the model)")
    return int(outside)


def clamp_to_box(x: torch.Tensor, what: str) -> tuple[torch.Tensor, int]:
    """``x`` clamped to [0, 1] (``x`` itself when nothing is outside) and the number of values clamped, after
    :func:`box_count` (one device sync). ``what`` names the input in the error.

    Raises:
        AdvlabError: NaN or infinite values, or values beyond :func:`box_tolerance` of ``x.dtype``.
    """
    count = box_count(box_stats(x).cpu().tolist(), x.dtype, what)
    return (x.clamp(0, 1) if count else x), count
