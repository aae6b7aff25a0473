"""Adversarial examples against a k-nearest-neighbour classifier over the model's representation (SSAT).

Self-supervised adversarial training (Chen et al., ICASSP 2020; methods.md part B 3) crafts x' against the
kNN classifier over the encoder's features, with the labels, and trains the encoder to keep the
representations of x and x' together (objective ``ssat``). The official notebook rebuilds its DkNN over the
whole training set at every step; here the kNN's bank is the part's per-sample state, refreshed by a rule:

- the whole bank is re-encoded (encoder in eval mode, no gradients) at the start of every epoch and, within
  an epoch, every ``refresh_every`` steps (0: at epoch starts only);
- at every step the rows of the batch's own samples are replaced by their clean features (free of extra
  passes over the data; the bank holds the sample itself, as the official DkNN over x_train does).

The attack is PGD (``advlab.attacks.pgd``) with the labels, of one of two losses (``loss``):

- ``guide`` (default): the evaluation attack ``knn-guide`` (``advlab.evaluation.knn_attack``): the
  mean similarity of the representation to the m nearest bank features of the most similar other class
  (``advlab.models.knn.guide_features``), as the paper's guide-sample PGD-kNN, in advlab's definition;
- ``soft-vote``: cross-entropy on the kNN's scores, whose gradient is the soft vote's.

Either way the kNN's hard vote judges kappa and ``fooled`` (which x' fool it), so the objective can keep only
those, as the official code does. The kNN's settings are the run's ``knn`` section: training aims at the
classifier that is evaluated.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...attacks import pgd
from ...attacks.context import eval_mode
from ...config import KNNConfig
from ...errors import ConfigError
from ...models import ContrastiveModel, KNNClassifier
from ...models.knn import encode, guide_count, guide_features, guide_similarity
from ...options import option
from ..base import PerturbationPart, Step, View, register


@dataclass
class PGDKNNOptions:
    steps: int = option(10, low=1)  # the official STL-10 setting: 10 steps
    step_size: float | None = option(None, low=0, low_open=True)  # pixel units; None = eps / 6 (0.005 for 0.03)
    random_start: Literal["uniform", "none"] = "uniform"
    loss: Literal["guide", "soft-vote"] = "guide"  # guide: knn-guide's guide features; soft-vote: CE on the kNN's scores
    guides: int | None = option(None, low=1)  # m of the guide loss; None = the kNN's k (cut to the smallest class)
    refresh_every: int = option(0, low=0)  # steps between full re-encodings of the bank within an epoch; 0 = epoch starts only
    encode_batch_size: int = option(500, low=1)  # images per forward pass when the bank is re-encoded


def representation_module(model: nn.Module) -> nn.Module:
    """The module whose output is the representation the kNN reads: a ContrastiveModel's encoder, else the
    model itself (its output taken as the representation). A compiled module is looked through."""
    model = getattr(model, "_orig_mod", model)
    return model.encoder if isinstance(model, ContrastiveModel) else model


@register("perturbation", "pgd-knn")
class PGDKNNPerturbation(PerturbationPart):
    """PGD against the kNN classifier over the representation, with the labels; the ``adv`` view carries
    kappa (kNN-correct iterates), the steps and ``fooled`` (the final x' fools the kNN's hard vote)."""

    Options = PGDKNNOptions
    pairs_with = {"objective": "ssat"}
    views = {"adv": frozenset({"kappa", "steps", "steps_taken", "fooled"})}
    needs_train_split = True

    def __init__(self, options: Any, env) -> None:
        super().__init__(options, env)
        self.knn_options = {**dataclasses.asdict(KNNConfig()), **env.knn}  # the run's knn section over the defaults
        self.knn: KNNClassifier | None = None  # built at the first refresh; its bank buffer is the live bank
        self.bank: torch.Tensor | None = None  # = knn.bank_features: (N, D), normalised rows for cosine
        self.labels = None if env.train_labels is None else env.train_labels.to(env.device).long()
        self.stale = True
        self.steps_in_epoch = 0
        self.fooled = 0
        self.seen = 0
        self.refreshes = 0

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.steps_in_epoch = 0
        self.fooled = self.seen = self.refreshes = 0
        self.stale = True
        if self.env.model is not None:  # the trainer's model: refresh now, so the bank exists before any step
            self.refresh(representation_module(self.env.model))

    def step_size(self) -> float:
        o = self.options
        return o.step_size if o.step_size is not None else self.env.eps / 6

    def _store(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=1) if self.knn_options["metric"] == "cosine" else features

    def refresh(self, encoder: nn.Module) -> None:
        """Re-encode the whole training split into the bank (eval mode, no gradients); the kNN classifier
        over it is built the first time (its checks run once, not at every step)."""
        features = encode(encoder, self.env.train_images, self.options.encode_batch_size, self.env.device)
        if self.knn is None or self.bank.shape != features.shape:
            k = min(int(self.knn_options["k"]), len(features))
            self.knn = KNNClassifier(encoder, features, self.labels, self.env.num_classes,
                                     **{**self.knn_options, "k": k})
            self.bank = self.knn.bank_features
        else:  # in place: the trainer holds this tensor to exchange its rows between processes
            self.bank.copy_(self._store(features))
        self.stale = False
        self.refreshes += 1

    def perturb(self, step: Step) -> dict[str, View]:
        o = self.options
        encoder = representation_module(step.local_model)
        due = o.refresh_every and self.steps_in_epoch and self.steps_in_epoch % o.refresh_every == 0
        if self.stale or self.bank is None or due:
            self.refresh(encoder)
        self.steps_in_epoch += 1
        if step.y.max() >= self.env.num_classes or step.y.min() < 0:
            raise ConfigError(f"perturbation 'pgd-knn': labels must be in [0, {self.env.num_classes})")
        knn = self.knn
        knn.encoder = encoder  # the module this step attacks (the same one the bank was encoded with)
        start = None if o.random_start == "none" else "uniform"
        if o.loss == "guide":
            with torch.no_grad(), eval_mode(knn):
                clean = encoder(step.x).float()
            m = guide_count(knn, knn.k if o.guides is None else o.guides)
            guides, _, _ = guide_features(knn, clean, step.y, m)
            metric = knn.metric
            result = pgd(encoder, step.x, step.y, eps=self.env.eps, step_size=self.step_size(), steps=o.steps,
                         norm=self.env.norm, loss=lambda rep, g: guide_similarity(rep, g, metric), target=guides,
                         random_start=start, model_mode="eval", track_final=False, classify=knn.scores)
        else:
            result = pgd(knn, step.x, step.y, eps=self.env.eps, step_size=self.step_size(), steps=o.steps,
                         norm=self.env.norm, loss="ce", random_start=start, model_mode="eval", track_final=False)
        with torch.no_grad(), eval_mode(knn):
            fooled = knn(result.x_adv).argmax(1) != step.y
            self.bank[step.index.to(self.bank.device)] = self._store(
                clean if o.loss == "guide" else encoder(step.x).float())
        self.fooled += int(fooled.sum())
        self.seen += len(fooled)
        return {"adv": View(x=result.x_adv, kappa=result.kappa, steps=o.steps, steps_taken=result.steps_taken,
                            fooled=fooled)}

    def per_sample_state(self) -> dict[str, torch.Tensor]:
        return {} if self.bank is None else {"bank": self.bank}

    def epoch_state(self) -> dict[str, Any]:
        """The bank as this epoch's refresh and steps left it, and the epoch's counts so far."""
        return {"bank": None if self.bank is None else self.bank.detach().clone(), "stale": self.stale,
                "steps_in_epoch": self.steps_in_epoch, "fooled": self.fooled, "seen": self.seen,
                "refreshes": self.refreshes}

    def load_epoch_state(self, epoch: int, state: dict[str, Any]) -> None:
        """The saved bank, bit for bit (not a refresh: the model has moved on since the epoch's start)."""
        super().load_epoch_state(epoch, state)
        if not state:
            return
        bank = state["bank"]
        if bank is not None:
            bank = bank.to(self.env.device)
            if self.knn is None or self.bank.shape != bank.shape:
                k = min(int(self.knn_options["k"]), len(bank))
                encoder = representation_module(self.env.model) if self.env.model is not None else nn.Identity()
                self.knn = KNNClassifier(encoder, bank, self.labels, self.env.num_classes,
                                         **{**self.knn_options, "k": k})
                self.bank = self.knn.bank_features
            self.bank.copy_(bank)
        self.stale = bool(state["stale"])
        self.steps_in_epoch, self.fooled = int(state["steps_in_epoch"]), int(state["fooled"])
        self.seen, self.refreshes = int(state["seen"]), int(state["refreshes"])

    def epoch_metrics(self) -> dict[str, Any]:
        return {"knn_fooled": self.fooled / max(self.seen, 1), "knn_bank_refreshes": self.refreshes}
