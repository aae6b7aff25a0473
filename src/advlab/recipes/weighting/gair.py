"""GAIR weights (Zhang et al., ICLR 2021): per-sample weights from the PGD geometry value kappa.

kappa_i is the number of attack iterates x^(0..K-1) still classified correctly (``step.attack.kappa``,
produced by the ``pgd`` and ``fat`` perturbations). Examples that the attack breaks early (small kappa)
lie close to the decision boundary and get large weights:

- ``tanh`` (GAIRAT's default): w = (1 + tanh(lam + 5 (1 - 2 kappa / K))) / 2 = sigmoid(2 lam + 10 (1 - 2 kappa / K))
- ``sigmoid``: w = sigmoid(lam + 5 (1 - 2 kappa / K))
- ``discrete``: w = (K + 1 - kappa) / (K + 1)

then normalised to mean 1 over the batch. Weights are computed as log-weights in float64
(``logsigmoid``) and normalised with a softmax, so no lambda makes them underflow to all-zero, divide
by zero or turn NaN. Before the burn-in ends the weights are uniform (``None``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ...epochs import epoch_of
from ...errors import AdvlabError, ConfigError
from ...options import option
from ..base import RecipeEnv, Step, TermSpec, WeightingPart, register

LAM_LIMIT = 1.0e6  # |lam| beyond this changes nothing in float64; clamping makes +-inf safe


def gair_log_weights(kappa: torch.Tensor, steps: int, lam: float, form: str = "tanh") -> torch.Tensor:
    """Log of the unnormalised GAIR weights of ``kappa`` (int, 0..steps), in float64."""
    if steps < 1:
        raise AdvlabError(f"gair: the number of attack steps K must be at least 1, got {steps}")
    if math.isnan(lam):
        raise AdvlabError("gair: lambda is NaN")
    device = kappa.device if kappa.device.type != "mps" else torch.device("cpu")  # mps has no float64
    k = kappa.to(device=device, dtype=torch.float64)
    lam = min(max(float(lam), -LAM_LIMIT), LAM_LIMIT)
    if form == "tanh":
        return torch.nn.functional.logsigmoid(2.0 * lam + 10.0 * (1.0 - 2.0 * k / steps))
    if form == "sigmoid":
        return torch.nn.functional.logsigmoid(lam + 5.0 * (1.0 - 2.0 * k / steps))
    if form == "discrete":
        return torch.log((steps + 1.0 - k) / (steps + 1.0))
    raise AdvlabError(f"gair: unknown weight form {form!r}; allowed: tanh, sigmoid, discrete")


def gair_weights(kappa: torch.Tensor, steps: int, lam: float, form: str = "tanh",
                 normalize: bool = True) -> torch.Tensor:
    """GAIR weights of ``kappa`` in float64: raw (``normalize=False``) or with mean exactly 1 over the batch."""
    log_w = gair_log_weights(kappa, steps, lam, form)
    if not normalize:
        return log_w.exp()
    return log_w.softmax(0) * len(log_w)


@dataclass
class GairOptions:
    form: Literal["tanh", "sigmoid", "discrete"] = "tanh"
    lam: float = -1.0  # lambda: smaller = sharper weights; +inf = uniform (plain AT)
    lam_schedule: Literal["fixed", "linear", "piecewise"] = "fixed"
    lam_start: float = 10.0  # linear: lambda at the first active epoch (10 = nearly uniform), reaching lam at the last
    lam_pieces: list[list[float]] | None = None  # [[start, lambda], ...]; None = [[3/4, lam-1], [11/12, lam-1.5]]
    burn_in: float = option(0.5, low=0)  # epochs of plain training first: a fraction of the run if < 1, else a number of epochs
    steps: int | None = option(None, low=1)  # K of the formula; None = the perturbation's number of attack steps
    term: str = "auto"  # the objective's term the weights multiply: auto (the terms on the adv view), all, or a name


@register("weighting", "gair")
class GairWeighting(WeightingPart):
    """Geometry-aware instance reweighting: weights from kappa after a burn-in, with a lambda schedule."""

    Options = GairOptions
    needs_views = {"adv": frozenset({"kappa"})}

    def __init__(self, options: GairOptions, env: RecipeEnv) -> None:
        super().__init__(options, env)
        o = options
        for name in ("lam", "lam_start", "burn_in"):
            if math.isnan(getattr(o, name)):
                raise ConfigError(f"weighting.{name}: must be a number, got NaN")
        if o.lam_schedule == "linear" and not math.isfinite(o.lam_start):
            raise ConfigError("weighting.lam_start: the linear schedule needs a finite start value "
                              f"(got {o.lam_start}); 10 gives nearly uniform weights")
        pieces = o.lam_pieces if o.lam_pieces is not None else [[0.75, o.lam - 1.0], [11 / 12, o.lam - 1.5]]
        for i, piece in enumerate(pieces):
            if len(piece) != 2 or piece[0] < 0 or math.isnan(piece[1]):
                raise ConfigError(f"weighting.lam_pieces[{i}]: expected [start >= 0, lambda], got {piece}")
        self.pieces = sorted((epoch_of(start, env.epochs), value) for start, value in pieces)
        self._steps = o.steps
        self._reset()

    # -- schedules (pure functions of the 0-indexed epoch) -------------------------------------------
    def burn_in_epoch(self) -> float:
        """The first 0-indexed epoch at which the weights apply."""
        return epoch_of(self.options.burn_in, self.env.epochs)

    def active(self, epoch: int | None = None) -> bool:
        """Whether the weights apply in ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        return epoch >= self.burn_in_epoch() - 1e-9

    def lam(self, epoch: int | None = None) -> float | None:
        """Lambda in ``epoch`` (default: the current one); None during the burn-in."""
        epoch = self.epoch if epoch is None else epoch
        if not self.active(epoch):
            return None
        o = self.options
        if o.lam_schedule == "fixed":
            return o.lam
        if o.lam_schedule == "linear":
            first = math.ceil(self.burn_in_epoch() - 1e-9)
            span = (self.env.epochs - 1) - first
            progress = 1.0 if span <= 0 else min(max((epoch - first) / span, 0.0), 1.0)
            return o.lam_start + progress * (o.lam - o.lam_start)
        value = o.lam
        for start, lam in self.pieces:
            if epoch >= start - 1e-9:
                value = lam
        return value

    # -- the weights ---------------------------------------------------------------------------------
    def default_terms(self, specs: tuple[TermSpec, ...]) -> list[str]:
        """``term: auto`` weights the terms that read the adversarial view (CE's whole loss, TRADES' boundary
        term as GAIR-TRADES, both MART terms)."""
        return [s.name for s in specs if "adv" in s.views]

    def steps(self, step: Step) -> int:
        """K: the ``steps`` option, else the steps the perturbation gave its attack."""
        if self._steps is not None:
            return self._steps
        steps = step.views["adv"].steps
        if steps is None:
            raise AdvlabError("weighting 'gair' cannot tell the number of attack steps K from this perturbation; "
                              "set weighting.steps")
        return int(steps)

    def kappa(self, step: Step) -> torch.Tensor:
        """kappa (B,) of the ``adv`` view (the recipe check guarantees the perturbation gives it)."""
        return step.views["adv"].kappa

    def weights(self, step: Step) -> torch.Tensor | None:
        """Mean-1 GAIR weights of the batch once the burn-in is over; None (uniform) before."""
        kappa = self.kappa(step)
        steps = self.steps(step)
        if not self._checked:
            if int(kappa.max()) > steps or int(kappa.min()) < 0:
                raise AdvlabError(f"weighting 'gair': kappa outside 0..K={steps} (max {int(kappa.max())}); "
                                  "weighting.steps must equal the perturbation's steps")
            self._checked = True
        # under torchrun the weights are normalised over the global batch (kappa gathered from every rank),
        # and each rank keeps its shard: the weights and diagnostics of one process
        collective = self.env.collective
        kappa_all = collective.all_gather_cat(kappa)
        self._record_kappa(kappa_all, steps)
        lam = self.lam()
        if lam is None:
            return None
        log_w = gair_log_weights(kappa_all, steps, lam, self.options.form)
        w = log_w.softmax(0) * len(log_w)
        self._record_weights(log_w, w)
        if collective.distributed:
            w = w[collective.shard(len(w))]
        return w.to(device=kappa.device, dtype=torch.float32)

    # -- diagnostics ---------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._hist: torch.Tensor | None = None
        self._checked = False
        self._batches = 0
        self._ess = self._raw_sum = self._w_sum = self._w_min = self._w_max = None
        self._n = 0

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._reset()

    _EPOCH_FIELDS = ("_hist", "_checked", "_batches", "_ess", "_raw_sum", "_w_sum", "_w_min", "_w_max", "_n")

    def epoch_state(self) -> dict[str, Any]:
        """The epoch's kappa histogram and weight sums so far."""
        return {name.lstrip("_"): _copy(getattr(self, name)) for name in self._EPOCH_FIELDS}

    def load_epoch_state(self, epoch: int, state: dict[str, Any]) -> None:
        super().load_epoch_state(epoch, state)
        if state:
            for name in self._EPOCH_FIELDS:
                setattr(self, name, _copy(state[name.lstrip("_")]))

    def _record_kappa(self, kappa: torch.Tensor, steps: int) -> None:
        counts = torch.bincount(kappa.detach().long().clamp(0, steps), minlength=steps + 1)
        if self._hist is None or len(self._hist) != len(counts):
            self._hist = counts
        else:
            self._hist = self._hist + counts

    def _record_weights(self, log_w: torch.Tensor, w: torch.Tensor) -> None:
        ess = 1.0 / (w * w).mean()  # (sum w)^2 / (B sum w^2) with mean(w) = 1
        raw = log_w.exp()
        if self._ess is None:
            self._ess, self._raw_sum, self._w_sum = ess, raw.sum(), w.sum()
            self._w_min, self._w_max = w.min(), w.max()
        else:
            self._ess = self._ess + ess
            self._raw_sum = self._raw_sum + raw.sum()
            self._w_sum = self._w_sum + w.sum()
            self._w_min = torch.minimum(self._w_min, w.min())
            self._w_max = torch.maximum(self._w_max, w.max())
        self._batches += 1
        self._n += len(w)

    def epoch_metrics(self) -> dict[str, Any]:
        """kappa histogram (counts of 0..K), weight mean/min/max, effective sample size, lambda, active."""
        lam = self.lam()
        out: dict[str, Any] = {"gair_active": lam is not None, "gair_lambda": lam}
        if self._hist is not None:
            hist = self._hist.tolist()
            out["gair_kappa_hist"] = hist
            out["gair_kappa_mean"] = sum(k * c for k, c in enumerate(hist)) / max(sum(hist), 1)
        if self._batches:
            out.update({
                "gair_weight_mean": float(self._w_sum) / self._n,  # 1 up to rounding: normalised per batch
                "gair_weight_min": float(self._w_min), "gair_weight_max": float(self._w_max),
                "gair_raw_weight_mean": float(self._raw_sum) / self._n,
                "gair_ess": float(self._ess) / self._batches,
            })
        else:
            out.update({"gair_weight_mean": None, "gair_weight_min": None, "gair_weight_max": None,
                        "gair_raw_weight_mean": None, "gair_ess": None})
        return out


def _copy(value: Any) -> Any:
    """A tensor cloned (detached), anything else as it is."""
    return value.detach().clone() if torch.is_tensor(value) else value
