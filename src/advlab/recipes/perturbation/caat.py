"""Adversaries and anti-adversaries (CAAT, Zhou, Yang, Wu, AAAI 2023; code xiaolingzhou98/CAAT utils.py
``caat_adv``): each sample is perturbed within its own bound eps_i both up TRADES' KL (the ``adv`` view) and
down the cross-entropy (the ``anti`` view), from the same 0.001 Gaussian start, 10 steps of 0.2 eps
(the code's 2/255 at eps 10/255), batch norm in eval mode during the attack and restored after (the code
leaves the model in eval mode for the rest of the epoch; advlab does not).

Both views come from ONE batched call of the PGD engine: the batch is stacked twice, with direction +1
and target p(x) (the clean prediction, so the cross-entropy's gradient is the KL's) for the first copy,
and direction -1 and target e_y for the second.

Per-sample bounds (``bound``): ``fixed`` eps_i = eps; ``remargin`` eps_i = eps * w2[y_i], FRL's ReMargin
multiplier of the class (the released "CAAT (ReMargin)"; needs a weighting part with FRL's duals:
``frl`` or ``caat``); ``grad`` eps_i = eps * (m_max - (m_max - m_min) ||e_y - p(x_i)||_2 / sqrt 2), the
paper's unreleased "Grad-Based" bound as advlab defines it: the same range [m_min, m_max] = [0.98, 2.5] as
ReMargin, set per sample by the gradient-norm feature instead of per class by the boundary-error dual,
so samples the model already fits get wide bounds and samples it gets wrong (hard, noisy or minority
ones) keep the base bound. With ``anti: false`` only the ``adv`` view is made (FRL's baselines);
``random_start: none`` starts from x (for comparisons without random draws).

Under torchrun each rank perturbs its shard: the bounds are those of one process (``fixed``; ``remargin``
from FRL's duals, identical on every rank; ``grad`` from each sample's own clean prediction), the logged
bounds are gathered over the global batch, and the 0.001 Gaussian start is drawn from the rank's own stream,
as for ``pgd``: equal in distribution to one process, not number for number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ...attacks import eval_mode, forward_logits, pgd
from ...errors import ConfigError
from ...options import option
from ..base import PerturbationPart, RecipeEnv, Step, View, register


@dataclass
class CAATPerturbationOptions:
    steps: int = option(10, low=1)
    step_size: float | None = option(None, low=0, low_open=True)  # pixel units; None = 0.2 * eps
    bound: Literal["fixed", "remargin", "grad"] = "fixed"
    bound_min: float = option(0.98, low=0)  # grad bound: multiplier of the worst-fit sample
    bound_max: float = option(2.5, low=0)  # grad bound: multiplier of a perfectly fit sample
    anti: bool = True  # make the anti-adversarial view too
    random_start: Literal["normal", "none"] = "normal"  # x + 0.001 N(0, I) (the code's), or x itself


@register("perturbation", "caat")
class CAATPerturbation(PerturbationPart):
    """The ``adv`` view by KL ascent and the ``anti`` view by CE descent, each sample in its own bound."""

    Options = CAATPerturbationOptions
    views = {"adv": frozenset({"steps", "steps_taken", "eps", "direction"}),
             "anti": frozenset({"steps", "steps_taken", "eps", "direction"})}

    def __init__(self, options: CAATPerturbationOptions, env: RecipeEnv) -> None:
        super().__init__(options, env)
        if options.bound_min > options.bound_max:
            raise ConfigError(f"perturbation.bound_min ({options.bound_min}) must not exceed "
                              f"perturbation.bound_max ({options.bound_max})")
        if not options.anti:
            self.views = {"adv": self.views["adv"]}
        self.bound_source: Any = None
        self._reset()

    def bind(self, recipe: Any) -> None:
        if self.options.bound == "remargin":
            source = recipe.weighting
            if not hasattr(source, "bound_multipliers"):
                raise ConfigError(f"perturbation 'caat' with bound remargin reads FRL's class bound multipliers, "
                                  f"which weighting {source.name!r} does not keep; use weighting frl or caat")
            self.bound_source = source

    def step_size(self) -> float:
        o = self.options
        return o.step_size if o.step_size is not None else 0.2 * self.env.eps

    def bounds(self, y: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
        """eps_i (B,) in pixel units (in the dtype of ``p_clean``: float32, or float64) for labels y and clean
        probabilities p (B, C)."""
        o, eps = self.options, self.env.eps
        if o.bound == "remargin":
            return eps * self.bound_source.bound_multipliers().to(y.device, p_clean.dtype)[y]
        if o.bound == "grad":
            one_hot = torch.nn.functional.one_hot(y, p_clean.shape[1]).to(p_clean.dtype)
            fit = (one_hot - p_clean).norm(dim=1) / math.sqrt(2)
            return eps * (o.bound_max - (o.bound_max - o.bound_min) * fit)
        return torch.full((len(y),), eps, device=y.device, dtype=p_clean.dtype)

    def create_views(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                   record: bool = True) -> dict[str, View]:
        """The views of (x, y) against ``model`` (any module: the trained one or a look-ahead); ``record``:
        count their bounds in the epoch's diagnostics."""
        o = self.options
        with eval_mode(model), torch.no_grad():
            logits = forward_logits(model, x, "perturbation 'caat'")
            p_clean = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(1)  # float64 stays
        eps = self.bounds(y, p_clean)
        n = len(x)
        if o.anti:
            x2 = torch.cat([x, x])
            target = torch.cat([p_clean, torch.nn.functional.one_hot(y, p_clean.shape[1]).float()])
            direction = torch.cat([torch.ones(n, device=x.device), -torch.ones(n, device=x.device)])
            eps2 = torch.cat([eps, eps])
        else:
            x2, target, direction, eps2 = x, p_clean, torch.ones(n, device=x.device), eps
        result = pgd(model, x2, None, eps=eps2, step_size=self.step_size(), steps=o.steps, norm=self.env.norm,
                     loss="ce", target=target.to(x.dtype), direction=direction.to(x.dtype),
                     random_start=None if o.random_start == "none" else o.random_start, model_mode="eval")
        if record:  # under torchrun: the bounds of the global batch, so every rank logs one process's numbers
            self._record(self.env.collective.all_gather_cat(eps))
        views = {"adv": View(x=result.x_adv[:n], steps=o.steps, steps_taken=result.steps_taken[:n], eps=eps,
                             direction=direction[:n])}
        if o.anti:
            views["anti"] = View(x=result.x_adv[n:], steps=o.steps, steps_taken=result.steps_taken[n:], eps=eps,
                                 direction=direction[n:])
        return views

    def perturb(self, step: Step) -> dict[str, View]:
        return self.create_views(step.local_model, step.x, step.y)

    # -- diagnostics ---------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._sum, self._n, self._min, self._max = 0.0, 0, math.inf, -math.inf

    def _record(self, eps: torch.Tensor) -> None:
        self._sum += float(eps.sum())
        self._n += len(eps)
        self._min = min(self._min, float(eps.min()))
        self._max = max(self._max, float(eps.max()))

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._reset()

    def epoch_state(self) -> dict[str, Any]:
        """The epoch's sum, count, min and max of the bounds so far."""
        return {"sum": self._sum, "n": self._n, "min": self._min, "max": self._max}

    def load_epoch_state(self, epoch: int, state: dict[str, Any]) -> None:
        super().load_epoch_state(epoch, state)
        if state:
            self._sum, self._n = float(state["sum"]), int(state["n"])
            self._min, self._max = float(state["min"]), float(state["max"])

    def epoch_metrics(self) -> dict[str, Any]:
        """Mean, min and max of the per-sample bounds eps_i of the epoch (pixel units)."""
        if not self._n:
            return {"caat_eps_mean": None, "caat_eps_min": None, "caat_eps_max": None}
        return {"caat_eps_mean": self._sum / self._n, "caat_eps_min": self._min, "caat_eps_max": self._max}
