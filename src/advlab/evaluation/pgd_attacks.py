"""PGD evaluation attacks (``pgd20``, ``cw20``, ``pgd20-scaled``) on the one attack engine of ``advlab.attacks``."""
from __future__ import annotations

from typing import Any

import torch

from ..attacks import pgd, skip_start
from .attack_registry import AttackSetup, register_attack


class PGDEval:
    """PGD with uniform random start(s); each sample stops at its first misclassified iterate.

    Stopping there (``early_stop=0``) makes the attack at least as strong as the usual final-iterate PGD of
    the same budget. With restarts, a point counts as robust only if no restart fools it.
    """

    def __init__(self, setup: AttackSetup, *, steps: int = 20, step_size: float | None = None, loss: str = "ce",
                 logit_scale: float = 1.0, restarts: int = 1, eps: float | None = None) -> None:
        self.model, self.norm = setup.model, setup.norm
        self.eps = setup.eps if eps is None else eps
        self.steps, self.loss, self.logit_scale, self.restarts = steps, loss, logit_scale, restarts
        self.step_size = self.eps / 4 if step_size is None else step_size
        self.generator = torch.Generator().manual_seed(setup.seed)
        # one restart draws one start for every point of a batch: a batch attacked elsewhere (another rank)
        # is replayed by drawing the same noise; more restarts draw for the points not yet fooled
        self.can_skip = restarts == 1
        self.clamped = 0  # input values a rounding error outside [0, 1], clamped (attacks.box), over all batches

    def skip(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Advance the random state as attacking the batch x (B, ...) would, without attacking it (exact for
        one restart: ``can_skip``)."""
        skip_start(x, float(self.eps), norm=self.norm, random_start="uniform", generator=self.generator)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial batch (B, ...) for images x in [0, 1] (B, ...) and integer labels y (B,) (pgd checks
        both, and the model, and runs under no_grad and inference_mode). Values of x a rounding error outside
        [0, 1] (``attacks.box``) are clamped and counted in ``settings()["clamped_inputs"]``.

        Raises:
            AdvlabError: bad labels, images further outside [0, 1], a model that does not return logits (B, C)
                or is not differentiable.
        """
        x_best = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            todo = (~fooled).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            result = pgd(self.model, x[todo], y[todo], eps=self.eps, step_size=self.step_size, steps=self.steps,
                         norm=self.norm, loss=self.loss, random_start="uniform", early_stop=0, model_mode="eval",
                         logit_scale=self.logit_scale, generator=self.generator)
            x_best[todo] = result.x_adv
            fooled[todo] = result.first_wrong != -1
            if len(todo) == len(x):
                self.clamped += result.clamped  # the first restart sees every point
        return x_best

    def cost(self) -> dict[str, tuple[int, int]]:
        """Model passes per point at most (no point fooled early): ``{"pgd": (forwards, backwards)}``, each step
        one forward and one backward per restart, plus the clean start's and the final prediction's forwards."""
        return {"pgd": (self.restarts * (self.steps + 1) + 1, self.restarts * self.steps)}

    def settings(self) -> dict[str, Any]:
        out = {"steps": self.steps, "step_size": self.step_size, "loss": self.loss, "random_start": "uniform",
               "restarts": self.restarts, "stop": "first misclassified iterate"}
        if self.logit_scale != 1.0:
            out["logit_scale"] = self.logit_scale
        if self.clamped:
            out["clamped_inputs"] = self.clamped
        return out


register_attack("pgd20", lambda s: PGDEval(s, steps=20, loss="ce"), white_box=True)
register_attack("cw20", lambda s: PGDEval(s, steps=20, loss="cw"), white_box=True)
register_attack("pgd20-scaled", lambda s: PGDEval(s, steps=20, loss="ce", logit_scale=10.0), white_box=True)
