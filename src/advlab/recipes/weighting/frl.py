"""FRL, "To be robust or to be fair" (Xu, Liu, Li, Jain, Tang, ICML 2021), as the CAAT code runs it
(xiaolingzhou98/CAAT utils.py ``frl_train``, ``cost_sensitive``, ``normalize_lambda``).

Once per epoch, before training, the model is evaluated on the meta split (clean, class-balanced, outside
training; ``data.meta_size``) with PGD-20 at the run's eps (step eps/4 from a uniform start, the last iterate
kept, batch norm in eval mode). Per class c, as the code's ``evaluate`` (utils.py lines 159-209): clean error
e0_c = 1 - acc_c, boundary error e1_c = acc_c - acc_adv_c (clean accuracy minus accuracy under the attack,
each a fraction of the class); the averages over classes e0, e1. Then the dual updates:

    gamma0_c = e0_c - e0 - delta0          gamma1_c = e1_c - e1 - delta1          (delta0 = delta1 = 0.07)
    lam0 <- lam0 + r1 * max(gamma0, -1000)   lam1 <- lam1 + 2 r1 * max(gamma1, -1000)   lam2 <- lam2 + r2 gamma1
    lam0, lam1 clipped at 0 and rescaled to sum at most lim = 0.5
    w0_c = 1/C + lam0_c - (1/C) sum(lam0)      (ReWeight: the natural term's class weights; same for w1, lam1)
    w2_c = clip(exp(2 lam2_c), 0.98, 2.5)      (ReMargin: the class's bound multiplier)

with r1 = 0.05 halved before every 40th epoch counted from 1 (the code's ``now_epoch % 40 == 0``, CAAT.py
lines 79-84: 0-indexed epochs 39, 79, ...) and r2 = 0.2 (the code's 0.1 = 1/C for CIFAR-10). The weights of a
batch term are ``w[y_i] * B / sum_j w[y_j]``, so ``mean(w l) = sum w[y] l / sum w[y]`` (the code's form).

The ``frl`` weighting part applies ReWeight to TRADES' ``natural`` and ``boundary`` terms; the class bound
multipliers serve the ``caat`` perturbation's ``bound: remargin`` (FRL's ReMargin).

Under torchrun every rank keeps the duals of one process: the meta split's batches are dealt over the ranks,
each attacked from the random start one process draws from the epoch's seeded generator (the others' draws
are skipped), and the per-class counts are summed (:func:`class_errors`); a batch's class weights are
normalised over the global batch (its labels gathered) and each rank keeps its rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...attacks import eval_mode, forward_logits, pgd, skip_start
from ...distributed import Collective
from ...options import option
from ..base import RecipeEnv, Step, TermSpec, WeightingPart, register


@dataclass
class FRLOptions:
    reweight: bool = True  # class weights w0, w1 on the natural and boundary terms (ReWeight)
    delta0: float = option(0.07, low=0)  # tolerance of the natural-error constraint
    delta1: float = option(0.07, low=0)  # tolerance of the boundary-error constraint
    rate0: float = option(0.05, low=0)  # r1: step of the ReWeight duals
    rate0_halving: int = option(40, low=1)  # r1 halves before each epoch (counted from 1) that is a multiple of this
    rate2: float = option(0.2, low=0)  # r2: step of the ReMargin dual
    limit: float = option(0.5, low=0)  # lim: the ReWeight duals sum to at most this
    bound_min: float = option(0.98, low=0)  # ReMargin multipliers are clipped to [bound_min, bound_max]
    bound_max: float = option(2.5, low=0)
    attack_steps: int = option(20, low=1)  # PGD steps of the per-epoch evaluation on the meta split
    batch_size: int = option(500, low=1)


def class_errors(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int, eps: float,
                 norm: str, steps: int, batch_size: int, device: torch.device,
                 generator: torch.Generator | None = None,
                 collective: Collective | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class clean error and boundary error (C,) float64 of ``model`` on ``images`` (uint8 or float in
    [0, 1], (N, ...)) with labels (N,), as the CAAT code's ``evaluate`` (xiaolingzhou98/CAAT utils.py lines
    159-209, ``in_class`` lines 107-117).

    Clean error of class c: 1 - acc_c; boundary error: acc_c - acc_adv_c, the class's clean accuracy minus
    its accuracy on the LAST iterate of PGD (``steps`` steps of eps/4 from a uniform start drawn from
    ``generator``, no early stop: the code's ``pgd_attack``, lines 33-67). A point wrong clean and right
    under the attack counts -1 (so a class's boundary error may be negative). The model's train/eval flags
    are restored.

    ``collective``: the processes computing together (None: this one). With several, the batches (those of
    one process) are dealt round-robin, batch j to rank ``j % world_size``; a rank advances ``generator`` over
    the batches of the others (:func:`advlab.attacks.skip_start`), so every batch is attacked from the start
    one process draws, and the per-class counts are summed over the ranks: every rank returns the errors of
    one process (the same model and generator state on every rank assumed).
    """
    comm = collective or Collective()
    counts = torch.zeros(2, num_classes, dtype=torch.float64)  # rows: wrong clean, correct clean - correct adv
    with eval_mode(model):
        for j, s in enumerate(range(0, len(labels), batch_size)):
            x = images[s:s + batch_size].to(device)
            x = x.float().div(255) if x.dtype == torch.uint8 else x.to(torch.promote_types(x.dtype, torch.float32))
            if j % comm.world_size != comm.rank:
                skip_start(x, eps, norm=norm, random_start="uniform", generator=generator)
                continue
            y = labels[s:s + batch_size].to(device)
            with torch.no_grad():
                clean_ok = forward_logits(model, x, "FRL's evaluation").argmax(1) == y
            x_adv = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=steps, norm=norm, early_stop=None,
                        model_mode="eval", generator=generator, track_final=False).x_adv
            with torch.no_grad():
                adv_ok = forward_logits(model, x_adv, "FRL's evaluation").argmax(1) == y
            counts[0].index_add_(0, y.cpu(), (~clean_ok).double().cpu())
            counts[1].index_add_(0, y.cpu(), clean_ok.double().cpu() - adv_ok.double().cpu())
    counts = comm.all_reduce_sum(counts)  # integers in float64: exact in any order
    per_class = torch.bincount(labels.cpu(), minlength=num_classes).double().clamp_min(1)
    return counts[0] / per_class, counts[1] / per_class


class FRLDuals:
    """FRL's dual variables lam0, lam1, lam2 (C,) and the class weights and bound multipliers they give."""

    def __init__(self, num_classes: int, options: FRLOptions) -> None:
        self.num_classes = num_classes
        self.options = options
        self.lam0 = torch.zeros(num_classes, dtype=torch.float64)
        self.lam1 = torch.zeros(num_classes, dtype=torch.float64)
        self.lam2 = torch.zeros(num_classes, dtype=torch.float64)
        self.errors: dict[str, list[float]] = {}

    def _normalise(self, lam: torch.Tensor) -> torch.Tensor:
        lam = lam.clamp_min(0)
        total = float(lam.sum())
        return lam / total * self.options.limit if total > self.options.limit else lam

    def update(self, epoch: int, clean_error: torch.Tensor, boundary_error: torch.Tensor) -> None:
        """One dual update from per-class errors (C,) measured before 0-indexed ``epoch``: r1 is
        ``rate0 * 0.5 ** ((epoch + 1) // rate0_halving)``, halved as the code's 1-indexed ``now_epoch`` reaches
        each multiple of ``rate0_halving`` (xiaolingzhou98/CAAT CAAT.py lines 79-84)."""
        o = self.options
        e0, e1 = clean_error.double(), boundary_error.double()
        gamma0 = e0 - e0.mean() - o.delta0
        gamma1 = e1 - e1.mean() - o.delta1
        r1 = o.rate0 * 0.5 ** ((epoch + 1) // o.rate0_halving)
        self.lam0 = self._normalise(self.lam0 + r1 * gamma0.clamp_min(-1000))
        self.lam1 = self._normalise(self.lam1 + 2 * r1 * gamma1.clamp_min(-1000))
        self.lam2 = self.lam2 + o.rate2 * gamma1
        self.errors = {"clean": e0.tolist(), "boundary": e1.tolist()}

    def class_weights(self, lam: torch.Tensor) -> torch.Tensor:
        """``1/C + lam_c - (1/C) sum(lam)`` (C,): sums to 1."""
        return 1.0 / self.num_classes + lam - lam.sum() / self.num_classes

    @property
    def natural_weights(self) -> torch.Tensor:
        return self.class_weights(self.lam0)

    @property
    def boundary_weights(self) -> torch.Tensor:
        return self.class_weights(self.lam1)

    @property
    def bound_multipliers(self) -> torch.Tensor:
        """ReMargin: ``clip(exp(2 lam2), bound_min, bound_max)`` (C,)."""
        return torch.exp(2 * self.lam2).clamp(self.options.bound_min, self.options.bound_max)

    def metrics(self, prefix: str) -> dict[str, Any]:
        return {f"{prefix}_lambda0": self.lam0.tolist(), f"{prefix}_lambda1": self.lam1.tolist(),
                f"{prefix}_lambda2": self.lam2.tolist(), f"{prefix}_natural_weights": self.natural_weights.tolist(),
                f"{prefix}_boundary_weights": self.boundary_weights.tolist(),
                f"{prefix}_bound_multipliers": self.bound_multipliers.tolist(),
                f"{prefix}_meta_clean_error": self.errors.get("clean"),
                f"{prefix}_meta_boundary_error": self.errors.get("boundary")}

    def state_dict(self) -> dict[str, Any]:
        return {"lam0": self.lam0.clone(), "lam1": self.lam1.clone(), "lam2": self.lam2.clone(),
                "errors": dict(self.errors)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.lam0, self.lam1, self.lam2 = (state[k].clone().double() for k in ("lam0", "lam1", "lam2"))
            self.errors = dict(state.get("errors", {}))


def batch_class_weights(class_weights: torch.Tensor, y: torch.Tensor,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``w[y_i] * B / sum_j w[y_j]`` (B,) for class weights (C,) and labels y (B,): per-sample weights whose
    mean-weighted term is the code's ``sum w[y] l / sum w[y]``. Under torchrun pass the global batch's labels
    and keep this rank's rows (:meth:`FRLWeightingBase.frl_term_weights` does). Computed in ``dtype``
    (float32, or float64 for a float64 model)."""
    w = class_weights.to(y.device, dtype)[y]
    total = w.sum()
    return w * (len(w) / total) if float(total) != 0 else torch.ones_like(w)


class FRLWeightingBase(WeightingPart):
    """Shared by ``frl`` and ``caat``: the duals, updated on the meta split before every epoch."""

    needs_meta_split = True

    def __init__(self, options: Any, env: RecipeEnv) -> None:
        super().__init__(options, env)
        self.duals = FRLDuals(env.num_classes, options)

    @property
    def frl_options(self) -> FRLOptions:
        return self.duals.options

    def bound_multipliers(self) -> torch.Tensor:
        """ReMargin's bound multiplier of each class (C,), for the ``caat`` perturbation."""
        return self.duals.bound_multipliers

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        env, o = self.env, self.frl_options
        if env.model is None or env.meta_images is None:
            return  # outside a trainer without a model or meta split: the duals stay as they are
        # the same generator on every rank; under torchrun the meta split's batches are dealt over the ranks
        # and the counts summed: every rank updates its duals from the errors of one process
        generator = torch.Generator().manual_seed(env.seed + 7919 * (epoch + 1))
        clean, boundary = class_errors(env.model, env.meta_images, env.meta_labels, env.num_classes, env.eps,
                                       env.norm, o.attack_steps, o.batch_size, env.device, generator,
                                       env.collective)
        self.duals.update(epoch, clean, boundary)

    def frl_term_weights(self, y: torch.Tensor, rows: slice = slice(None),
                         dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor | None]:
        """ReWeight's per-sample weights of the natural and boundary terms (None when off), normalised over the
        labels ``y`` (B,) of the whole batch, then ``rows`` of them kept: under torchrun ``y`` is the global
        batch (every rank's labels in rank order) and ``rows`` this rank's shard, so the weights are this
        rank's rows of one process's. ``dtype``: of the weights (float32; float64 for a float64 model)."""
        if not self.frl_options.reweight:
            return {"natural": None, "boundary": None}
        return {"natural": batch_class_weights(self.duals.natural_weights, y, dtype)[rows],
                "boundary": batch_class_weights(self.duals.boundary_weights, y, dtype)[rows]}

    def global_labels(self, y: torch.Tensor) -> tuple[torch.Tensor, slice]:
        """The global batch's labels (B_global,) gathered from every rank in rank order (``y`` itself for one
        process) and the rows of this rank's shard (``y`` = ``y_all[rows]``)."""
        collective = self.env.collective
        y_all = collective.all_gather_cat(y)
        return y_all, collective.shard(len(y_all))

    def state_dict(self) -> dict[str, Any]:
        return {"frl": self.duals.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.duals.load_state_dict(state["frl"])


@register("weighting", "frl")
class FRLWeighting(FRLWeightingBase):
    """FRL's ReWeight on TRADES' natural and boundary terms; its ReMargin multipliers serve the ``caat``
    perturbation (``bound: remargin``)."""

    Options = FRLOptions
    pairs_with = {"objective": "trades"}  # FRL weights TRADES' terms (the CAAT code's FRL)

    def term_weights(self, step: Step, specs: tuple[TermSpec, ...]) -> dict[str, torch.Tensor | None]:
        if not self.frl_options.reweight:
            return {s.name: None for s in specs}
        frl = self.frl_term_weights(*self.global_labels(step.y))  # normalised over the global batch
        return {s.name: frl.get(s.name) for s in specs}

    def epoch_metrics(self) -> dict[str, Any]:
        return self.duals.metrics("frl")
