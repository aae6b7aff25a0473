"""CAAT's meta-learned weights (Zhou, Yang, Wu, AAAI 2023; code xiaolingzhou98/CAAT utils.py ``train_model``).

A meta-network maps the six training-dynamics features of each sample (:mod:`.training_dynamics`) to
(a_i, b_i): a_i multiplies TRADES' natural and boundary terms (with FRL's class weights w0, w1 when
``reweight``), b_i the anti-adversarial cross-entropy. Every ``meta_every`` steps the meta-network takes one
bi-level step (Meta-Weight-Net style):

1. the step's loss with weights g(zeta(W)) kept in the graph, the features zeta recomputed from the clean
   logits and attached to the model's weights W (``meta_features: attached``, the official code's, utils.py
   lines 302-318; ``detached`` makes them constants); its gradient w.r.t. the model's trainable parameters
   with ``create_graph``; one look-ahead step of the real optimiser (its learning rate, momentum buffer and
   weight decay: :func:`.lookahead.sgd_lookahead`), giving W'(Omega);
2. the next batch of the meta split (clean, class-balanced; the code's shuffled meta loader without
   replacement, :meth:`CAATWeighting.meta_batch`), its views made against W' with the bounds and class
   weights of ITS OWN labels (the code reuses the training batch's); the meta loss is the same objective,
   not weighted by g (FRL's class weights kept);
3. the meta-gradient reaches Omega through W'; an Adam step (lr 1e-4, weight decay 5e-4).

The model's update then uses g(zeta) of the updated meta-network, without gradient. The second feature
(class-average clean loss of the previous epoch) is tracked for real (the code's stays at its initial 5);
before the first epoch ends it is ln C, the loss of a uniform prediction. During ``warmup_epochs`` the
weights are a = 1, b = 0 (TRADES with FRL's weights) and the meta-network is not trained.

Under torchrun (docs/DISTRIBUTED.md) the features and labels of the global batch are gathered, so the
meta-net (batch norm included), the class losses and the diagnostics see the batch of one process on every
rank, and each rank keeps the weights of its shard. The look-ahead steps with the global-batch mean gradient
(the update DDP makes; :func:`.lookahead.global_mean_gradient`); every rank draws the same meta batch, and
the ranks' meta-gradients (each through its own samples) are summed, so every rank makes the Adam step of
one process: the meta-net, its Adam state and its generator stay identical on every rank. The features
need no per-sample history (they are computed from the step's clean logits), so nothing is exchanged by
dataset index.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ...distributed import all_reduce_sum_list
from ...options import option
from ..base import RecipeEnv, Step, TermSpec, View, combine, register
from .frl import FRLOptions, FRLWeightingBase
from .lookahead import LookAhead, check_sgd, global_mean_gradient, sgd_lookahead
from .meta_net import MetaNet
from .training_dynamics import training_dynamics


@dataclass
class CAATWeightingOptions(FRLOptions):
    temperature: float = option(0.001, low=0, low_open=True)  # softmax temperature of the meta-net
    hidden: int = option(100, low=1)  # hidden units of the meta-net
    meta_lr: float = option(1e-4, low=0, low_open=True)  # Adam on the meta-net
    meta_weight_decay: float = option(5e-4, low=0)
    meta_every: int = option(50, low=1)  # a bi-level step every this many training steps
    meta_batch_size: int = option(128, low=1)
    warmup_epochs: int = option(0, low=0)  # plain TRADES (a = 1, b = 0) for these first epochs
    # the meta-net's input features in the look-ahead: "attached" to the model's weights (the official code's
    # meta-gradient) or "detached" (constants; advlab's form before issue 25): docs/methods/caat.md
    meta_features: Literal["attached", "detached"] = "attached"


@register("weighting", "caat")
class CAATWeighting(FRLWeightingBase):
    """Per-sample (a_i, b_i) from a meta-network trained by bi-level optimisation on the meta split, times
    FRL's class weights on the natural and boundary terms."""

    Options = CAATWeightingOptions
    pairs_with = {"perturbation": "caat", "objective": "caat"}
    needs_outputs = ("clean",)

    def __init__(self, options: CAATWeightingOptions, env: RecipeEnv) -> None:
        super().__init__(options, env)
        with torch.random.fork_rng(devices=[]):  # the meta-net's own initialisation; the global stream is kept
            torch.manual_seed(env.seed + 0x4341)
            self.meta_net = MetaNet(6, options.hidden, options.temperature).to(env.device)
        self.meta_optimizer = torch.optim.Adam(self.meta_net.parameters(), lr=options.meta_lr,
                                               weight_decay=options.meta_weight_decay)
        self.meta_generator = torch.Generator().manual_seed(env.seed + 0x4D455441)
        c = env.num_classes
        counts = torch.tensor(env.class_counts if env.class_counts else [1] * c, dtype=torch.float32)
        self.class_prior = counts / counts.sum()
        self.class_loss = torch.full((c,), math.log(c))  # zeta_2 of the current epoch (previous epoch's mean)
        self.loss_sum = torch.zeros(c, dtype=torch.float64)
        self.loss_count = torch.zeros(c, dtype=torch.float64)
        self.steps_done = 0
        self.meta_order: torch.Tensor | None = None  # the meta loader's permutation of this pass, and its position
        self.meta_cursor = 0
        self.recipe: Any = None
        self._reset_metrics()

    def bind(self, recipe: Any) -> None:
        self.recipe = recipe

    # -- epoch ----------------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        if epoch > 0 and float(self.loss_count.sum()) > 0:
            seen = self.loss_count > 0
            self.class_loss = torch.where(seen, (self.loss_sum / self.loss_count.clamp_min(1)).float(),
                                          self.class_loss)
        self.loss_sum.zero_()
        self.loss_count.zero_()
        self.meta_order, self.meta_cursor = None, 0  # the code makes a new meta-loader iterator every epoch
        super().on_epoch_start(epoch)
        self._reset_metrics()

    def active(self, epoch: int) -> bool:
        return epoch >= self.options.warmup_epochs

    # -- weights ---------------------------------------------------------------------------------------
    def features(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The six features (B, 6) of logits (B, C) and labels y (B,) in the meta-net's dtype, with the graph of
        ``logits`` (pass ``logits.detach()`` for constants)."""
        dtype = next(self.meta_net.parameters()).dtype
        return training_dynamics(logits, y, self.class_loss, self.class_prior).to(dtype)

    def combined_weights(self, ab: torch.Tensor | None, y: torch.Tensor, specs_names: list[str],
                         rows: slice = slice(None), dtype: torch.dtype = torch.float32
                         ) -> dict[str, torch.Tensor | None]:
        """Per-term weights (of ``rows`` of the batch): a * FRL's w0 / w1 on natural / boundary, b on anti
        (``ab`` None: a = b = 1). ``ab`` (B, 2) and ``y`` (B,) are of the whole batch (under torchrun the
        global one: FRL's class weights are normalised over it); ``rows``: the samples weighted here;
        ``dtype``: of FRL's class weights (float32; float64 for a float64 model)."""
        frl = self.frl_term_weights(y, rows, dtype)
        a = ab[rows, 0] if ab is not None else None
        b = ab[rows, 1] if ab is not None else None

        def times(u: torch.Tensor | None, v: torch.Tensor | None) -> torch.Tensor | None:
            if u is None:
                return v
            return u if v is None else u * v

        out = {"natural": times(a, frl["natural"]), "boundary": times(a, frl["boundary"]), "anti": b}
        return {name: out.get(name, a) for name in specs_names}

    def global_features(self, step: Step) -> tuple[torch.Tensor, torch.Tensor, slice]:
        """The features (B, 6) and labels (B,) of the whole batch and this rank's rows of it.

        Under torchrun they are gathered from every rank in rank order (one collective: the labels travel
        as a seventh column, exact below 2^24 classes), so the meta-net sees the global batch as in one
        process (its batch norm takes the global statistics, its running statistics stay identical on every
        rank) and the class losses are accumulated identically on every rank.
        """
        zeta = self.features(step.outputs["clean"].detach(), step.y)
        collective = self.env.collective
        if not collective.distributed:
            return zeta, step.y, slice(None)
        packed = collective.all_gather_cat(torch.cat([zeta, step.y.to(zeta.dtype)[:, None]], dim=1))
        return packed[:, :6], packed[:, 6].round().long(), collective.shard(len(packed))

    def term_weights(self, step: Step, specs: tuple[TermSpec, ...]) -> dict[str, torch.Tensor | None]:
        names = [s.name for s in specs]
        dtype = torch.promote_types(step.outputs["clean"].dtype, torch.float32)
        zeta, y, rows = self.global_features(step)
        self._accumulate_class_loss(zeta[:, 0], y)
        if not self.active(step.epoch):
            weights = self.combined_weights(None, y, names, rows, dtype)
            if "anti" in weights:
                weights["anti"] = torch.zeros(len(step.y), device=step.y.device)
            return weights
        self.steps_done += 1
        if self.steps_done % self.options.meta_every == 0 and self.env.meta_images is not None:
            self.meta_step(step, zeta, y)
        with torch.no_grad():
            ab = self.meta_net(zeta)
        self._record(ab, y)
        return self.combined_weights(ab, y, names, rows, dtype)

    def _accumulate_class_loss(self, loss: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum.index_add_(0, y.cpu(), loss.detach().double().cpu())
        self.loss_count.index_add_(0, y.cpu(), torch.ones(len(y), dtype=torch.float64))

    # -- the bi-level step -------------------------------------------------------------------------------
    def meta_batch(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of the meta split (pixels in [0, 1] of ``dtype`` (B, ...), labels (B,)) on the device.

        As the code's meta loader (xiaolingzhou98/CAAT NLT_CIFAR.py line 116: ``shuffle=True, drop_last=True``;
        a new iterator at every epoch start, utils.py line 288, and when one is exhausted, lines 324-328):
        consecutive batches of ``meta_batch_size`` of one random permutation of the split (drawn with the
        part's own generator), no sample twice in a pass; a new permutation at every epoch start and when fewer
        than ``meta_batch_size`` samples are left (the rest dropped). A meta split smaller than
        ``meta_batch_size`` is one batch of the whole split (the code's loader would then give none).
        """
        n = len(self.env.meta_labels)
        size = min(self.options.meta_batch_size, n)
        if self.meta_order is None or self.meta_cursor + size > len(self.meta_order):
            self.meta_order, self.meta_cursor = torch.randperm(n, generator=self.meta_generator), 0
        index = self.meta_order[self.meta_cursor:self.meta_cursor + size]
        self.meta_cursor += size
        x = self.env.meta_images[index].to(self.env.device).to(dtype).div(255)
        return x, self.env.meta_labels[index].to(self.env.device)

    def attach_features(self, zeta: torch.Tensor, clean_logits: torch.Tensor, y_local: torch.Tensor,
                        rows: slice) -> torch.Tensor:
        """``zeta`` (B, 6) (the whole batch's features, constants) with this rank's ``rows`` attached to the
        model's weights through ``clean_logits`` (B_local, C) of labels ``y_local`` (B_local,): the values of
        ``zeta``, the graph of the features recomputed from ``clean_logits`` (the official meta step,
        xiaolingzhou98/CAAT utils.py lines 302-308: ``adv_feature`` of the pseudo model's logits, not
        detached). Under torchrun the other ranks' rows stay constants, as in :func:`.global_mean_gradient`."""
        return _live_rows(zeta, self.features(clean_logits, y_local), rows)

    def global_terms(self, terms: dict[str, torch.Tensor], rows: slice, global_n: int) -> dict[str, torch.Tensor]:
        """Each per-sample term (B_local,) of this rank as a term of the whole batch (B,): the other ranks'
        values gathered as constants, this rank's ``rows`` with their graph (one process: ``terms`` itself).

        With attached features the meta-net's weights of EVERY sample depend on this rank's features (its
        batch norm takes the global batch's statistics), so this rank's share of the look-ahead gradient
        needs every sample's term, not only its own; the ranks' shares then sum to one process's gradient."""
        collective = self.env.collective
        if not collective.distributed:
            return terms
        names = list(terms)
        packed = collective.all_gather_cat(torch.stack([terms[n].detach() for n in names], dim=1))
        if len(packed) != global_n:
            raise ValueError(f"gathered {len(packed)} samples' terms, expected the global batch's {global_n}")
        return {n: _live_rows(packed[:, k], terms[n], rows) for k, n in enumerate(names)}

    def meta_step_loss(self, step: Step, zeta: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The meta loss (steps 1-2 of the module docs) as a function of the meta-net's parameters.

        ``zeta`` (B, 6) and ``y`` (B,): the features and labels of the whole batch (under torchrun the global
        one, :meth:`global_features`; ``y`` None: gathered from ``step.y``). With ``meta_features: attached``
        (the default, the official code's) this rank's features are recomputed from the look-ahead's clean
        logits and keep their graph, so the look-ahead gradient differentiates through the meta-net's input
        (:meth:`attach_features`); ``detached`` keeps ``zeta`` as constants. The look-ahead runs on this
        process's module (``step.local_model``, outside DDP) with the gradient of the global-batch mean
        (:func:`.lookahead.global_mean_gradient`), the update DDP makes, over the trainable parameters only
        (frozen ones, ``model.freeze``, stay as they are); its graph reaches the meta-net through this rank's
        samples only (its terms, and its features in every sample's weight: :meth:`global_terms`), so the
        ranks' meta-gradients sum to that of one process.
        """
        optimizer = self.env.optimizer
        check_sgd(optimizer, "weighting 'caat'")
        model, objective = step.local_model, self.recipe.objective
        names = [s.name for s in objective.term_specs]
        y, rows = self.global_labels(step.y) if y is None else (y, self.env.collective.shard(len(y)))
        params = dict(model.named_parameters())
        ahead_now = LookAhead(model, params)
        outputs = {v: ahead_now(step.views[v].x.detach()) for v in objective.forward_views}
        if self.options.meta_features == "attached":
            zeta = self.attach_features(zeta, outputs["clean"], step.y, rows)
        ab = self.meta_net(zeta)
        dtype = torch.promote_types(outputs["clean"].dtype, torch.float32)
        probe = Step(model=model, x=step.x, y=step.y, index=step.index, epoch=step.epoch, views=step.views,
                     outputs=outputs, loss_targets=step.loss_targets)
        terms = self.global_terms(objective.terms(probe), rows, len(y))
        loss = combine(terms, objective.coefficients(), self.combined_weights(ab, y, names, slice(None), dtype))
        if self.env.collective.distributed:  # the mean over the global batch, as a mean over this rank's samples
            loss = loss * (len(y) / len(step.y))
        trainable = {n: p for n, p in params.items() if p.requires_grad}
        grads = dict(zip(trainable, torch.autograd.grad(loss, list(trainable.values()), create_graph=True)))
        grads = global_mean_gradient(grads, len(step.y), len(y), self.env.collective)
        new = sgd_lookahead(model, grads, optimizer)
        new.update({n: p for n, p in params.items() if n not in trainable})
        x_m, y_m = self.meta_batch(dtype=next(iter(params.values())).dtype)
        frozen = LookAhead(model, {n: p.detach() for n, p in new.items()})
        meta_views = {"clean": View(x=x_m), **self.recipe.perturbation.create_views(frozen, x_m, y_m, record=False)}
        ahead = LookAhead(model, new)
        meta_outputs = {v: ahead(meta_views[v].x) for v in objective.forward_views}
        meta_probe = Step(model=model, x=x_m, y=y_m, index=torch.arange(len(y_m)), epoch=step.epoch,
                          views=meta_views, outputs=meta_outputs,
                          loss_targets={v: y_m for v in objective.target_views})
        return combine(objective.terms(meta_probe), objective.coefficients(),
                       self.combined_weights(None, y_m, names, dtype=dtype))

    def meta_step(self, step: Step, zeta: torch.Tensor, y: torch.Tensor | None = None) -> float:
        """One bi-level update of the meta-net (see the module docs); returns the meta loss.

        ``zeta``, ``y``: as for :meth:`meta_step_loss`. Under torchrun each rank's meta-gradient is its samples'
        share; they are summed over the ranks (one all-reduce, with the meta loss), so every rank makes the
        same Adam step, that of one process, and the meta-net and its Adam state stay identical. The meta
        loss returned (and logged) is the mean of the ranks' (equal unless their meta views' random starts
        differ).
        """
        params = list(self.meta_net.parameters())
        meta_loss = self.meta_step_loss(step, zeta, y)
        meta_grads = torch.autograd.grad(meta_loss, params, allow_unused=True)
        used = [g.detach() for g in meta_grads if g is not None]  # the same parameters on every rank
        *summed, loss_sum = all_reduce_sum_list(self.env.collective, [*used, meta_loss.detach()])
        summed_grads = iter(summed)
        self.meta_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, meta_grads):
            p.grad = None if g is None else next(summed_grads)
        self.meta_optimizer.step()
        value = float(loss_sum) / self.env.collective.world_size
        self._meta_losses.append(value)
        return value

    # -- diagnostics and state ---------------------------------------------------------------------------
    def _reset_metrics(self) -> None:
        c = self.env.num_classes
        self._a_sum = torch.zeros(c, dtype=torch.float64)
        self._b_sum = torch.zeros(c, dtype=torch.float64)
        self._count = torch.zeros(c, dtype=torch.float64)
        self._adv_major = 0
        self._meta_losses: list[float] = []

    def _record(self, ab: torch.Tensor, y: torch.Tensor) -> None:
        y = y.cpu()
        self._a_sum.index_add_(0, y, ab[:, 0].double().cpu())
        self._b_sum.index_add_(0, y, ab[:, 1].double().cpu())
        self._count.index_add_(0, y, torch.ones(len(y), dtype=torch.float64))
        self._adv_major += int((ab[:, 0] > 0.5).sum())

    def epoch_state(self) -> dict[str, Any]:
        """The epoch's sums of a and b per class, their count, the adversarial share and the meta losses so far
        (the class losses and their running sums are in :meth:`state_dict`)."""
        return {"a_sum": self._a_sum.clone(), "b_sum": self._b_sum.clone(), "count": self._count.clone(),
                "adv_major": self._adv_major, "meta_losses": list(self._meta_losses)}

    def load_epoch_state(self, epoch: int, state: dict[str, Any]) -> None:
        super().load_epoch_state(epoch, state)
        if state:
            self._a_sum, self._b_sum = state["a_sum"].clone().double(), state["b_sum"].clone().double()
            self._count = state["count"].clone().double()
            self._adv_major, self._meta_losses = int(state["adv_major"]), [float(v) for v in state["meta_losses"]]

    def epoch_metrics(self) -> dict[str, Any]:
        """Mean a and b overall and per class, the share of samples with a > 0.5, the meta losses, FRL's duals,
        class weights and bound multipliers, and the class losses zeta_2 in use."""
        n = float(self._count.sum())
        per = self._count.clamp_min(1)
        out: dict[str, Any] = {
            "caat_active": self.active(self.epoch),
            "caat_a_mean": float(self._a_sum.sum()) / n if n else None,
            "caat_b_mean": float(self._b_sum.sum()) / n if n else None,
            "caat_a_per_class": (self._a_sum / per).tolist() if n else None,
            "caat_b_per_class": (self._b_sum / per).tolist() if n else None,
            "caat_adversarial_share": self._adv_major / n if n else None,
            "caat_meta_steps": len(self._meta_losses),
            "caat_meta_loss": sum(self._meta_losses) / len(self._meta_losses) if self._meta_losses else None,
            "caat_class_loss": self.class_loss.tolist(),
        }
        out.update(self.duals.metrics("frl"))
        return out

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update({
            "meta_net": {k: v.detach().clone() for k, v in self.meta_net.state_dict().items()},
            "meta_optimizer": self.meta_optimizer.state_dict(),
            "meta_generator": self.meta_generator.get_state().clone(),
            "class_loss": self.class_loss.clone(), "loss_sum": self.loss_sum.clone(),
            "loss_count": self.loss_count.clone(), "steps_done": self.steps_done,
            "meta_order": None if self.meta_order is None else self.meta_order.clone(),
            "meta_cursor": self.meta_cursor,
        })
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        super().load_state_dict(state)
        self.meta_net.load_state_dict(state["meta_net"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.meta_generator.set_state(state["meta_generator"].cpu())
        self.class_loss = state["class_loss"].clone().float()
        self.loss_sum = state["loss_sum"].clone().double()
        self.loss_count = state["loss_count"].clone().double()
        self.steps_done = int(state["steps_done"])
        order = state.get("meta_order")  # absent from checkpoints written before the loader-like meta batches
        self.meta_order = None if order is None else order.clone().long()
        self.meta_cursor = int(state.get("meta_cursor", 0))


def _live_rows(constants: torch.Tensor, live: torch.Tensor, rows: slice) -> torch.Tensor:
    """``constants`` (B, ...) with the values of its ``rows`` unchanged and the graph of ``live`` (rows' length,
    ...) there: the whole batch of one process, differentiable through this rank's own rows only."""
    start, stop, _ = rows.indices(len(constants))
    constants = constants.detach()
    attached = constants[start:stop] + (live - live.detach())
    return torch.cat([constants[:start], attached, constants[stop:]])
