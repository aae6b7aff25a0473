"""Uniform weighting: every example counts the same."""
from ..base import WeightingPart, register


@register("weighting", "uniform")
class UniformWeighting(WeightingPart):
    """All weights 1 (every baseline)."""

    label_free = True
