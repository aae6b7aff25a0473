"""NoiLIn, noisy-label injection (Zhang, Xu, Han, Liu, Cui, Niu, Sugiyama, TMLR 2022; code zjfheart/NoiLIn).

Every step replaces each label independently, with probability ``r`` (the noise rate), by a uniformly
drawn *other* class (``symmetric``) or by ``(y + 1) mod C`` (``pair``). The noisy labels are drawn once
per step, from one persistent generator seeded from the run's seed, and the same ones serve the attack
and the loss (``apply_to``: ``both``, ``attack`` or ``loss``).

The rate follows NoiLIn's automatic schedule, applied after each epoch's validation: with the window
``A`` (``tau`` entries, initially 0) of validation robust accuracies,

    if a_epoch < A[epoch % tau]:  r <- min(r * (1 + gamma), max_rate)     # below the value tau epochs ago
    A[epoch % tau] = a_epoch
    if epoch <= half_cap_epoch:   r <- min(r, max_rate / 2)

which is the official rule "the window sum dropped" written as the comparison it amounts to; it cannot
fire in the first ``tau`` epochs. The rate, the window and the generator state are checkpointed, so a
resumed run continues the same noise stream and schedule.
"""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ...data import flip_labels
from ...epochs import whole_epoch_of
from ...errors import ConfigError
from ...options import option
from ..base import LabelsPart, RecipeEnv, Step, register

SEED_OFFSET = 0x4E4F49  # the noise stream is seeded with env.seed + this, apart from the loader's stream


@dataclass
class NoilinOptions:
    kind: Literal["symmetric", "pair"] = "symmetric"  # noise model
    apply_to: Literal["both", "attack", "loss"] = "both"  # which targets get the noisy labels
    schedule: Literal["auto", "fixed"] = "auto"  # auto: NoiLIn's schedule; fixed: the rate stays at `rate`
    rate: float = option(0.05, low=0, high=1)  # starting noise rate (official min_noise_rate)
    max_rate: float = option(0.6, low=0, high=1)  # cap of the rate (official: 0.6 with PGD-AT, 0.4 with TRADES)
    gamma: float = option(0.05, low=0)  # boosting rate: r <- r * (1 + gamma) when robust accuracy fell
    tau: int = option(10, low=1)  # window: compare with the validation robust accuracy tau epochs earlier
    half_cap_until: float | None = option(0.75, low=0)  # cap max_rate/2 after epochs <= this (<1: fraction; >=1: epoch; null: never)


def resolve_half_cap_epoch(value: float | None, epochs: int) -> int:
    """The last 0-indexed epoch after which the rate is capped at ``max_rate / 2`` (-1: never).

    A value below 1 is a fraction of the epochs (``round(value * epochs)``: 0.75 of 120 gives 90, the
    official ``epoch <= 90``); 1 or more is an epoch number and must be whole; ``None`` means no half cap.
    """
    if value is None:
        return -1
    return whole_epoch_of(value, epochs, "labels.half_cap_until")


def check_options(o: NoilinOptions, num_classes: int) -> None:
    """Raise ConfigError for a rate above the cap or fewer than 2 classes (ranges: see the Options fields)."""
    if o.rate > o.max_rate:
        raise ConfigError(f"labels.rate ({o.rate}) must not exceed labels.max_rate ({o.max_rate})")
    if num_classes < 2:
        raise ConfigError(f"labels: noisy labels need at least 2 classes, got {num_classes}")


def generator_device(device: torch.device) -> torch.device:
    """Where the noise is drawn: on the GPU for CUDA runs (no host transfer per step), else on the CPU."""
    return device if device.type == "cuda" else torch.device("cpu")


@register("labels", "noilin")
class NoilinLabels(LabelsPart):
    """Labels flipped at rate r, fresh every step; r grows when validation robust accuracy falls."""

    Options = NoilinOptions

    def __init__(self, options: NoilinOptions, env: RecipeEnv) -> None:
        super().__init__(options, env)
        check_options(options, env.num_classes)
        self.half_cap_epoch = resolve_half_cap_epoch(options.half_cap_until, env.epochs)
        self.rate = float(options.rate)
        self.window = [0.0] * options.tau
        self.raises = 0  # how many times the schedule raised the rate
        self.epochs_done = 0  # epochs whose validation the schedule has seen
        self.generator = torch.Generator(device=generator_device(torch.device(env.device)))
        self.generator.manual_seed(int(env.seed) + SEED_OFFSET)
        self._reset_epoch_counters()

    # ----------------------------------------------------------------------------------------------
    def _reset_epoch_counters(self) -> None:
        self.epoch_rate = self.rate  # the rate this epoch trains with
        self.raised = False
        self.flipped = torch.zeros((), dtype=torch.long, device=self.env.device)  # no host sync per step
        self.seen = 0
        self._drawn_for: weakref.ref | None = None  # the step the noisy labels were drawn for
        self._noisy: torch.Tensor | None = None

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._reset_epoch_counters()

    def epoch_state(self) -> dict[str, Any]:
        """The epoch's rate and its counts of labels flipped and seen so far."""
        return {"epoch_rate": self.epoch_rate, "flipped": self.flipped.detach().clone(), "seen": self.seen}

    def load_epoch_state(self, epoch: int, state: dict[str, Any]) -> None:
        super().load_epoch_state(epoch, state)
        if state:
            self.epoch_rate, self.seen = float(state["epoch_rate"]), int(state["seen"])
            self.flipped = state["flipped"].to(self.env.device, torch.long).clone()

    def noisy_labels(self, step: Step) -> torch.Tensor:
        """This step's noisy labels, drawn on the first call for this step and kept for the rest of it."""
        if self._drawn_for is not None and self._drawn_for() is step:
            noisy = self._noisy
        else:
            # under torchrun every rank draws for the whole global batch from the same stream and keeps its
            # shard: the labels, the stream and the counts are those of one process
            collective = self.env.collective
            y = collective.all_gather_cat(step.y)
            noisy_all = flip_labels(y, self.rate, self.env.num_classes, kind=self.options.kind,
                                    generator=self.generator)
            noisy = noisy_all[collective.shard(len(y))] if collective.distributed else noisy_all
            self._drawn_for, self._noisy = weakref.ref(step), noisy
            self.flipped += (noisy_all != y).sum().to(self.flipped.device)
            self.seen += int(y.shape[0])
        return noisy

    def attack_target(self, step: Step) -> torch.Tensor:
        """Noisy labels when ``apply_to`` is ``both`` or ``attack``, else the given labels.

        The noise is drawn here in either case, so the stream does not depend on ``apply_to``.
        """
        noisy = self.noisy_labels(step)
        return noisy if self.options.apply_to in ("both", "attack") else step.y

    def loss_targets(self, step: Step, views: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The same step's noisy labels when ``apply_to`` is ``both`` or ``loss``, else the given labels."""
        noisy = self.noisy_labels(step)
        target = noisy if self.options.apply_to in ("both", "loss") else step.y
        return {view: target for view in views}

    # ----------------------------------------------------------------------------------------------
    def update_rate(self, epoch: int, robust_acc: float) -> bool:
        """Apply the schedule after ``epoch`` (0-indexed) with its validation robust accuracy; True if raised."""
        o = self.options
        slot = epoch % o.tau
        raised = o.schedule == "auto" and robust_acc < self.window[slot]
        self.window[slot] = float(robust_acc)
        if raised:
            self.rate = min(self.rate * (1.0 + o.gamma), o.max_rate)
            self.raises += 1
        if o.schedule == "auto" and epoch <= self.half_cap_epoch:
            self.rate = min(self.rate, o.max_rate / 2)
        return raised

    def on_validation(self, epoch: int, metrics: dict[str, float]) -> None:
        self.raised = self.update_rate(epoch, float(metrics["val_robust"]))
        self.epochs_done = epoch + 1

    def epoch_metrics(self) -> dict[str, Any]:
        """``noise_rate`` (this epoch's rate), ``noise_flipped`` (realised fraction of labels changed),
        ``noise_rate_next`` (after the schedule) and ``noise_raised`` (1 if the schedule fired)."""
        flipped = int(self.flipped.item()) / self.seen if self.seen else 0.0
        return {"noise_rate": self.epoch_rate, "noise_flipped": flipped, "noise_rate_next": self.rate,
                "noise_raised": int(self.raised)}

    # ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Rate, window, number of raises, epochs seen and the generator state (a CPU byte tensor)."""
        return {"rate": self.rate, "window": list(self.window), "raises": self.raises,
                "epochs_done": self.epochs_done,
                "generator": self.generator.get_state().clone(), "generator_device": self.generator.device.type}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``; an empty mapping leaves the part as it is."""
        if not state:
            return
        window = [float(a) for a in state["window"]]
        if len(window) != self.options.tau:
            raise ConfigError(f"labels.tau: the checkpoint's window has {len(window)} entries, this run has "
                              f"tau {self.options.tau}; resume with the same tau")
        self.rate, self.window, self.raises = float(state["rate"]), window, int(state["raises"])
        self.epochs_done = int(state.get("epochs_done", 0))
        if state.get("generator_device") == self.generator.device.type:
            self.generator.set_state(state["generator"].to("cpu"))
        else:
            warnings.warn(f"noilin: the checkpoint's noise stream was drawn on {state.get('generator_device')}, "
                          f"this run draws on {self.generator.device.type}; the stream is reseeded and the "
                          "noisy labels will differ from an uninterrupted run (the schedule does not)")
            self.generator.manual_seed(int(self.env.seed) + SEED_OFFSET + 1_000_003 * self.epochs_done)
        self._reset_epoch_counters()
