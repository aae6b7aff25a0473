"""No perturbation: standard (non-adversarial) training."""
from ..base import PerturbationPart, Step, register


@register("perturbation", "none")
class NoPerturbation(PerturbationPart):
    """Train on the clean batch."""

    def perturb(self, step: Step) -> None:
        step.x_adv = step.x
