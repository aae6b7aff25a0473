"""The four parts of a training step, the typed record they fill in, and the facts of a run they share.

A step is one-way; each stage fills fields of :class:`Step` that only later stages read:

    labels.attack_target(step)            -> step.attack_target   (int64 labels or soft labels (B, C))
    perturbation.perturb(step)            -> step.views           {"clean": View(x), "adv": View(x_adv, kappa, ...)}
    objective.forward(step)               -> step.outputs         model outputs of the views the objective reads
    labels.loss_targets(step, views)      -> step.loss_targets    one target per view the objective's terms need
    objective.terms(step)                 -> step.terms           per-sample loss (B,) of each named term
    weighting.term_weights(step, specs)   -> step.weights         per-term, per-sample weights (B,) or None
    combine(...)                          -> step.loss            sum of coefficient * weighted mean per term

What a part reads from another is declared on its class (``Part.needs_views``, ``needs_soft_targets``,
``needs_meta_split``; ``PerturbationPart.views``, ``LabelsPart.soft_targets``, ``ObjectivePart.term_specs``),
and :func:`advlab.recipes.recipe.check_recipe` refuses parts that cannot feed each other when the recipe is
built, naming both parts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..attacks import forward_logits
from ..config import PART_KINDS
from ..distributed import Collective
from ..registry import Registry


@dataclass
class RecipeEnv:
    """Facts about the run that parts may need when they are built.

    ``meta_images``/``meta_labels``: the clean, class-balanced meta split (``data.meta_size``), uint8
    N x C x H x W and int64 N, or None; ``class_counts``: training images per class (after imbalance).
    ``model``/``optimizer``: the model being trained and its optimiser, for parts that evaluate the model
    between epochs (FRL) or look one optimiser step ahead (CAAT's meta-learning); None outside a trainer
    unless the caller sets them. ``train_images``/``train_labels``: the training split itself (uint8
    N x C x H x W, int64 N; rows = dataset indices), for parts that keep a representation of all of it (the
    kNN bank of ``pgd-knn``); ``knn``: the run's kNN classifier settings (``KNNConfig`` as a dict: k,
    metric, vote, temperature), so a training attack aims at the classifier that is evaluated. ``collective``: the processes training together (``advlab.distributed``);
    under torchrun each step holds this rank's shard of the global batch, and a part whose per-step
    computation spans the batch (NoiLIn's draws, GAIR's normalisation) gathers over it. ``dataset``: the name of
    the training dataset (``advlab.data.DATASETS``), for parts that read its record (the ``augment``
    perturbation's flip default); None outside a trainer unless the caller sets it.
    """

    num_train: int  # size of the training split; per-sample state has this many rows
    num_classes: int
    epochs: int
    eps: float
    norm: str
    device: torch.device
    seed: int = 0
    first_decay_epoch: int | None = None  # 0-indexed epoch at which the learning rate first drops
    class_counts: list[int] | None = None
    meta_images: torch.Tensor | None = None
    meta_labels: torch.Tensor | None = None
    model: nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    collective: Collective = field(default_factory=Collective)
    train_images: torch.Tensor | None = None
    train_labels: torch.Tensor | None = None
    knn: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None


@dataclass
class NoOptions:
    pass


@dataclass
class View:
    """One input the objective may train on, with the per-sample facts of the attack that made it.

    ``x``: (B, ...) pixels in [0, 1]. ``kappa``: (B,) int64, GAIRAT's count of attack iterates still
    classified correctly; ``steps``: K, the steps the attack was given; ``steps_taken``: (B,) int64
    gradient steps each sample took; ``eps``: (B,) the bound of each sample in pixel units; ``direction``:
    (B,) +1 (adversarial) or -1 (anti-adversarial); ``fooled``: (B,) bool, whether the view fools the
    classifier the attack aimed at (``pgd-knn``: the kNN's hard vote differs from the label). Facts an attack
    does not give are None.
    """

    x: torch.Tensor
    kappa: torch.Tensor | None = None
    steps: int | None = None
    steps_taken: torch.Tensor | None = None
    eps: torch.Tensor | None = None
    direction: torch.Tensor | None = None
    fooled: torch.Tensor | None = None


VIEW_FACTS = frozenset(f.name for f in dataclasses.fields(View) if f.name != "x")
"""The per-sample facts a view can carry; what a part declares it needs or gives is checked against these."""


@dataclass(frozen=True)
class TermSpec:
    """One term of an objective: its name, the views whose outputs it reads, and whether it is a loss
    against the labels part's targets (``supervised``: cross-entropy-like) or a consistency term."""

    name: str
    views: tuple[str, ...]
    supervised: bool


@dataclass
class Step:
    """Everything one training step knows, filled in stage by stage (see the module docs).

    ``x`` (B, ...) pixels in [0, 1]; ``y`` (B,) int64 given labels; ``index`` (B,) int64 dataset indices
    (rows of per-sample state); ``epoch`` 0-indexed. ``model`` trains (under torchrun: the
    DistributedDataParallel wrapper, whose forward passes join the gradient exchange); ``local_model`` is the
    module without the wrapper, for forward passes that must stay on this process (the attack, no-grad
    predictions); given as None, it is ``model`` (one process).
    """

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    epoch: int
    local_model: nn.Module | None = None
    attack_target: torch.Tensor | None = None
    views: dict[str, View] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    loss_targets: dict[str, torch.Tensor] = field(default_factory=dict)
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, torch.Tensor | None] = field(default_factory=dict)
    loss: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.local_model is None:
            self.local_model = self.model


class Part:
    """Base of every recipe part. Subclasses set ``Options`` (a dataclass) and register by name.

    Declarations read by the recipe check (class attributes):
    ``needs_views``: view name -> facts of :class:`View` this part reads (given by the perturbation);
    ``needs_soft_targets``: reads soft (B, C) loss targets (given by a labels part with ``soft_targets``);
    ``needs_meta_split``: needs ``RecipeEnv.meta_images`` (``data.meta_size > 0``);
    ``needs_train_split``: needs ``RecipeEnv.train_images`` and ``train_labels`` (a trainer gives them);
    ``needs_outputs``: views whose model outputs it reads (the objective must forward them);
    ``pairs_with``: the parts of other kinds it needs where the defaults (hard, pgd, uniform, ce) do not feed it,
    e.g. ``{"labels": "self-adaptive"}``: the contract tests build it with them, and the recipe check names them;
    ``distributed``: it keeps its state identical on every rank under torchrun (False: refused there);
    ``label_free``: nothing it computes depends on the labels, so it trains on unlabeled images (``data.unlabeled``,
    label -1) when every part of the recipe is label-free.
    """

    Options: ClassVar[type] = NoOptions
    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    needs_views: ClassVar[dict[str, frozenset[str]]] = {}
    needs_soft_targets: ClassVar[bool] = False
    needs_meta_split: ClassVar[bool] = False
    needs_train_split: ClassVar[bool] = False
    needs_outputs: ClassVar[tuple[str, ...]] = ()
    pairs_with: ClassVar[dict[str, str]] = {}  # kind -> part it needs when the defaults do not feed it
    distributed: ClassVar[bool] = True  # keeps its state identical on every rank under torchrun (see docs/DISTRIBUTED.md)
    label_free: ClassVar[bool] = False  # trains without labels: may train on data.unlabeled's images (label -1)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for view, facts in cls.needs_views.items():
            unknown = set(facts) - VIEW_FACTS
            if unknown:
                raise TypeError(f"{cls.__name__}.needs_views[{view!r}]: {sorted(unknown)} are not View facts "
                                f"({', '.join(sorted(VIEW_FACTS))})")

    def __init__(self, options: Any, env: RecipeEnv) -> None:
        self.options = options
        self.env = env
        self.epoch = 0

    def bind(self, recipe: Any) -> None:
        """Called once the recipe is built, with the other parts: a part that reads another part's state
        (not a per-step field) finds it here and raises ConfigError naming both when it is missing."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each epoch with its 0-indexed number (not again when a run resumes in the middle of
        the epoch: :meth:`load_epoch_state` restores what it set)."""
        self.epoch = epoch

    def on_validation(self, epoch: int, metrics: dict[str, float]) -> None:
        """Called after each epoch's validation with its results (``val_clean``, ``val_robust``)."""

    def epoch_metrics(self) -> dict[str, Any]:
        """Numbers this part wants in the epoch's log line (JSON-serialisable); reset per epoch by the part."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Per-sample and schedule state to save in checkpoints (tensors, numbers, lists)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def epoch_state(self) -> dict[str, Any]:
        """The state of the epoch in progress that :meth:`state_dict` does not hold (tensors, numbers, lists):
        what :meth:`on_epoch_start` set and the steps since changed, e.g. the sums behind
        :meth:`epoch_metrics` or a generator reseeded each epoch. A mid-epoch checkpoint saves it beside
        :meth:`state_dict`; under torchrun each rank's is saved."""
        return {}

    def load_epoch_state(self, epoch: int, state: dict[str, Any]) -> None:
        """Continue 0-indexed ``epoch`` in its middle: restore :meth:`epoch_state`'s result, after
        :meth:`load_state_dict` and in place of :meth:`on_epoch_start`, which is not called again (it would
        reset the sums, reseed, or update duals a second time from a model that has moved on)."""
        self.epoch = epoch

    def per_sample_state(self) -> dict[str, torch.Tensor]:
        """Live tensors of per-sample state (dim 0 = dataset index) that a step changes only at the rows of its
        own ``step.index``. Under torchrun the trainer gathers those rows from every rank after each step and
        writes them on every rank, so the state stays identical (``advlab.distributed.sync_rows``)."""
        return {}


class LabelsPart(Part):
    """Which targets the attack and the loss aim at. ``soft_targets``: whether loss targets may be (B, C)."""

    kind = "labels"
    soft_targets: ClassVar[bool] = False

    def attack_target(self, step: Step) -> torch.Tensor:
        """Target of the attack: int64 labels (B,) or soft labels (B, C)."""
        return step.y

    def loss_targets(self, step: Step, views: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Target of the loss on each of ``views``: int64 labels (B,) or soft labels (B, C).

        Runs after the objective's forward: ``step.outputs`` holds the model outputs of its views.
        """
        return {view: step.y for view in views}


class PerturbationPart(Part):
    """Which inputs are trained on. ``views``: the views it makes and the facts each carries."""

    kind = "perturbation"
    views: ClassVar[dict[str, frozenset[str]]] = {"adv": frozenset()}

    def perturb(self, step: Step) -> dict[str, View]:
        """The views of this batch, by name (``step.attack_target`` is set)."""
        raise NotImplementedError


class ObjectivePart(Part):
    """What is minimised: per-sample terms and their coefficients.

    ``forward_views``: the views whose model outputs the terms read, forwarded in this order (train mode,
    with gradients); ``target_views``: the views whose loss targets the labels part must give;
    ``term_specs``: the terms; ``accuracy_view``: the view whose outputs give the training accuracy;
    ``representation``: the terms read a representation (the output (B, D) of a model with a projection head,
    ``model.head: projection``), not class logits; the run's config is refused when the two disagree.
    """

    kind = "objective"
    forward_views: ClassVar[tuple[str, ...]] = ("adv",)
    target_views: ClassVar[tuple[str, ...]] = ("adv",)
    term_specs: ClassVar[tuple[TermSpec, ...]] = ()
    accuracy_view: ClassVar[str] = "adv"
    representation: ClassVar[bool] = False

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        """Model outputs of ``forward_views``, one forward each, in order."""
        return {name: forward_logits(step.model, step.views[name].x, f"objective {self.name!r}")
                for name in self.forward_views}

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        """Per-sample loss (B,) of each term of ``term_specs``."""
        raise NotImplementedError

    def correct(self, step: Step) -> torch.Tensor:
        """(B,) bool: which samples the step got right, for the training accuracy in the log: by default the
        argmax of the ``accuracy_view``'s outputs against the given labels (a representation objective
        says what is right for it)."""
        return step.outputs[self.accuracy_view].detach().argmax(1) == step.y

    def coefficients(self) -> dict[str, float]:
        """The multiplier of each term in the loss (1 unless the objective says otherwise)."""
        return {spec.name: 1.0 for spec in self.term_specs}


class WeightingPart(Part):
    """How much each sample counts in each term.

    ``term`` (an option of weighting parts that have one): ``auto`` (the part's own choice, see
    :meth:`default_terms`), ``all``, or the name of one of the objective's terms.
    """

    kind = "weighting"

    def default_terms(self, specs: tuple[TermSpec, ...]) -> list[str]:
        """The terms the weights apply to when ``term`` is ``auto``: all of them."""
        return [s.name for s in specs]

    def weighted_terms(self, specs: tuple[TermSpec, ...]) -> list[str]:
        """The names of the terms this part weights, given the objective's terms."""
        term = getattr(self.options, "term", "auto")
        if term == "auto":
            return self.default_terms(specs)
        if term == "all":
            return [s.name for s in specs]
        return [term]

    def weights(self, step: Step) -> torch.Tensor | None:
        """Per-sample weights (B,) of this step, mean 1 over the batch, or None (uniform); computed once per
        step and given to every weighted term."""
        return None

    def term_weights(self, step: Step, specs: tuple[TermSpec, ...]) -> dict[str, torch.Tensor | None]:
        """Weights of every term: :meth:`weights` for the weighted terms, None for the others."""
        chosen = set(self.weighted_terms(specs))
        w = self.weights(step) if chosen else None
        return {s.name: w if s.name in chosen else None for s in specs}


REGISTRIES: dict[str, Registry] = {kind: Registry(f"{kind} part") for kind in PART_KINDS}


def register(kind: str, name: str):
    """Class decorator: register a part under ``name`` in the ``kind`` registry."""

    def add(cls):
        cls.name = name
        REGISTRIES[kind].register(name, cls)
        return cls

    return add


def weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of a per-sample loss, weighted when weights (mean 1 over the batch) are given."""
    if weights is None:
        return per_sample.mean()
    return (per_sample * weights.to(per_sample.dtype)).mean()


def combine(terms: dict[str, torch.Tensor], coefficients: dict[str, float],
            weights: dict[str, torch.Tensor | None]) -> torch.Tensor:
    """The scalar loss: sum over terms of coefficient times the (weighted) mean of the term."""
    total = None
    for name, per_sample in terms.items():
        value = weighted_mean(per_sample, weights.get(name))
        coefficient = coefficients.get(name, 1.0)
        value = value if coefficient == 1.0 else coefficient * value
        total = value if total is None else total + value
    if total is None:
        raise ValueError("an objective gave no terms")
    return total


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy with int64 labels or soft labels (B, C)."""
    if not target.is_floating_point():
        return nn.functional.cross_entropy(logits, target.long(), reduction="none")
    return -(target * logits.float().log_softmax(1)).sum(1)
