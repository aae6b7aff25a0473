"""No perturbation: standard (non-adversarial) training."""
from ..base import PerturbationPart, Step, View, register


@register("perturbation", "none")
class NoPerturbation(PerturbationPart):
    """Train on the clean batch: the ``adv`` view is x itself, with no attack facts."""

    views = {"adv": frozenset()}

    def perturb(self, step: Step) -> dict[str, View]:
        return {"adv": View(x=step.x)}
