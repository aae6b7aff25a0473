"""How long an evaluation will take, said before it starts: measured passes times counted passes.

:func:`estimate_evaluation` times one forward pass and one forward + backward pass (the gradient with respect to
the input, as the attacks take it) of up to 128 points on this machine, scaled to a batch of the evaluation's size
(linearly: on a GPU, where a larger batch is cheaper per point, this over-estimates), asks each attack for the
model passes it makes per point (``cost()`` of the attacks of ``EVAL_ATTACKS``: for AutoAttack, read from
pyautoattack's iterations, restarts, target classes and queries of the chosen version), and multiplies. Every
point is assumed to survive every attack to its last step, so the result is an upper bound: the attacks stop on
the points they break, and AutoAttack runs each sub-attack only on the points still robust, so a model with
low robust accuracy takes less. An estimate, said as one.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..attacks.context import eval_mode
from ..errors import AdvlabError
from .attack_registry import EVAL_ATTACKS, AttackSetup
from .sanity import MORE_RESTARTS, MORE_STEPS, SUBSET


@dataclass
class EvaluationEstimate:
    """An upper bound on an evaluation's time. ``seconds``: the total; ``parts``: seconds per attack (and
    ``sanity`` for the sanity checks' extra attacks; None for an attack that does not say its cost);
    ``forward_seconds``/``gradient_seconds``: one forward / forward + backward of ``batch`` points, measured."""

    seconds: float
    parts: dict[str, float | None]
    forward_seconds: float
    gradient_seconds: float
    batch: int
    n: int
    device: str
    notes: dict[str, str] = field(default_factory=dict)
    timings: "PassTimes | None" = None  # what was measured: pass it as ``timings`` to estimate another choice

    def text(self) -> str:
        """One line: ``at most about 2 h 10 min on this machine (pgd20 1 min, autoattack 2 h 5 min (standard:
        apgd-ce, apgd-t, fab-t, square), ...); timed: 35 ms per forward + backward of 256 points on cpu``."""
        parts = []
        for name, seconds in self.parts.items():
            label = f"{name} ({self.notes[name]})" if name in self.notes else name
            parts.append(f"{label} {format_duration(seconds) if seconds is not None else 'not estimated'}")
        return (f"at most about {format_duration(self.seconds)} on this machine ({', '.join(parts)}); timed: "
                f"{1000 * self.gradient_seconds:.0f} ms per forward + backward of {self.batch} points on "
                f"{self.device}; an upper bound: attacks stop on the points they break")


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min``, ``2 h 10 min``, ``3 d 4 h``: a duration as a person reads it."""
    if seconds < 60:
        return f"{max(seconds, 0):.0f} s" if seconds >= 1 else "under 1 s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{minutes:.0f} min"
    hours, minutes = divmod(round(minutes), 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


TIMED_POINTS = 128
"""At most this many points are timed; the time is scaled linearly to the evaluation's batch."""
SMALL_POINTS = 8
"""A second, small batch timed: what a pass costs when few points are left (AutoAttack's later sub-attacks)."""


@dataclass(frozen=True)
class PassTimes:
    """Seconds of one forward and one forward + backward pass, measured at two batch sizes (``small`` and
    ``big`` points); :meth:`at` draws the line through them (never below the small batch's times, extended
    linearly above the big one: an over-estimate on a GPU)."""

    small: int
    forward_small: float
    gradient_small: float
    big: int
    forward_big: float
    gradient_big: float

    def at(self, points: float) -> tuple[float, float]:
        """(forward, forward + backward) seconds of a batch of ``points`` points."""
        if self.big <= self.small or points <= self.small:
            if self.big <= self.small:  # one size measured: proportional above it
                scale = max(points / self.big, 1.0) if self.big else 1.0
                return self.forward_big * scale, self.gradient_big * scale
            return self.forward_small, self.gradient_small
        w = (points - self.small) / (self.big - self.small)
        return (self.forward_small + w * (self.forward_big - self.forward_small),
                self.gradient_small + w * (self.gradient_big - self.gradient_small))


def _time(fn, repeats: int = 2) -> float:
    fn()  # warm-up (allocations, kernel selection)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def time_passes(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Seconds of one forward pass (no gradient) and of one forward + backward pass to the input, of the batch
    ``x`` (float pixels on the model's device), in eval mode (every flag restored); the best of two passes after a
    warm-up."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)

    def forward() -> None:
        with torch.no_grad():
            model(x)
        sync()

    def gradient() -> None:
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = model(xg)
            out = out if torch.is_tensor(out) else out[0]
            grad, = torch.autograd.grad(out.float().logsumexp(1).sum(), xg)
        sync()

    with eval_mode(model), torch.random.fork_rng(devices=[x.device.index or 0] if x.device.type == "cuda" else []):
        return _time(forward), _time(gradient)


def estimate_evaluation(model: nn.Module, images: torch.Tensor, *, n: int, attacks: Sequence[str], eps: float,
                        norm: str = "linf", batch_size: int = 256, num_classes: int = 10,
                        autoattack_version: str = "standard", square_queries: int = 1000, sanity: bool = True,
                        device: torch.device | str | None = None, seed: int = 0,
                        timings: PassTimes | tuple[float, float] | None = None,
                        clean_fraction: float | None = None) -> EvaluationEstimate:
    """An upper bound on the time of ``advlab.evaluate(model, <n points>, attacks=..., ...)`` on this machine.

    Args:
        model: the model as it will be evaluated (timed in eval mode; its flags, parameters and the global RNG
            are left as they were).
        images: some of the evaluation's images (uint8 or float in [0, 1], (M, C, H, W), M >= 1): repeated to a
            batch of ``min(batch_size, n)`` for the timing.
        n, attacks, eps, norm, batch_size, num_classes, autoattack_version, square_queries, sanity, seed: as
            ``advlab.evaluate`` takes them.
        timings: the ``timings`` of an earlier estimate of the same model (:class:`PassTimes`), to estimate
            another choice of attacks without timing again; or ``(forward_seconds, gradient_seconds)`` of any batch.
        clean_fraction: the fraction of the points classified correctly clean, when known: an attack that
            attacks only those (``attacks_correct_only``: AutoAttack and Square) is charged for batches of that
            many points (at the small batch's cost per pass at least).

    Returns:
        EvaluationEstimate: seconds in total and per attack; an attack that does not say its cost (a
        registered attack without ``cost()``) is None and left out of the total.

    Raises:
        AdvlabError: no images, or an unknown attack name.
    """
    if len(images) == 0:
        raise AdvlabError("estimate_evaluation needs at least one image to time the model")
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    batch = max(1, min(batch_size, n))
    timed = min(batch, TIMED_POINTS)
    reps = math.ceil(timed / len(images))
    x = images.repeat(reps, *([1] * (images.dim() - 1)))[:timed].to(device)
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    if timings is None:  # two batch sizes timed: a small batch costs more per point (fixed costs of a pass)
        small = min(timed, SMALL_POINTS)
        big_times = time_passes(model, x)
        timings = PassTimes(small, *(time_passes(model, x[:small]) if small < timed else big_times),
                            timed, *big_times)
    elif not isinstance(timings, PassTimes):
        timings = PassTimes(batch, *timings, batch, *timings)  # (forward, gradient) seconds of any batch
    t_forward, t_gradient = timings.at(batch)
    batches = math.ceil(n / batch)

    def seconds(cost: dict[str, tuple[int, int]], count: int, points: float = batch) -> float:
        forwards = sum(f for f, _ in cost.values())
        backwards = sum(b for _, b in cost.values())
        f, g = timings.at(points)
        return count * (forwards * f + backwards * max(g - f, 0.0))

    setup = AttackSetup(model, eps, norm, device, seed, num_classes, autoattack_version, square_queries)
    parts: dict[str, float | None] = {"clean": batches * t_forward}
    notes: dict[str, str] = {}
    for name in attacks:
        try:
            attack: Any = EVAL_ATTACKS.get(name)(setup)
        except AdvlabError:  # e.g. knn-guide of a model that is not a kNN classifier here
            attack = None
        cost = getattr(attack, "cost", None)
        only_correct = clean_fraction is not None and getattr(attack, "attacks_correct_only", False)
        points = max(1.0, clean_fraction * batch) if only_correct else batch
        parts[name] = seconds(cost(), batches, points) if callable(cost) else None
        if callable(cost) and getattr(attack, "version", None):
            notes[name] = f"{attack.version}: {', '.join(cost())}"
        if parts[name] is not None and only_correct:
            notes[name] = notes.get(name, name) + f", on the {100 * clean_fraction:.0f}% correct clean"
    if sanity:
        sub = math.ceil(min(SUBSET, n) / batch)
        pgd = {"pgd": (21, 20)}
        extra = seconds(pgd, sub)  # large-eps: PGD-20 at a large radius
        extra += seconds({"pgd": (MORE_RESTARTS * (MORE_STEPS + 1) + 1, MORE_RESTARTS * MORE_STEPS)}, sub)
        if "pgd20" not in attacks:
            extra += seconds(pgd, sub)  # more-steps compares with PGD-20 on the same points
        parts["sanity"] = extra
    total = sum(v for v in parts.values() if v is not None)
    return EvaluationEstimate(seconds=total, parts=parts, forward_seconds=t_forward, gradient_seconds=t_gradient,
                              batch=batch, n=n, device=str(device), notes=notes, timings=timings)
