"""Two augmented views of every image, for self-supervised contrastive training (SimCLR, Chen et al. 2020).

The ``augment`` perturbation makes the views ``view1`` and ``view2``: two independent draws of SimCLR's
augmentation (:mod:`advlab.data.contrastive_augment`: random resized crop, flip where the dataset allows it,
colour jitter and grayscale on colour images, brightness and contrast only on 1-channel images) of the clean
batch, on the batch's device. No labels are read.

Randomness: the part owns a CPU ``torch.Generator`` reseeded at every epoch start from (seed, epoch, stream,
rank) with the loader's mixer (:func:`advlab.seeds.epoch_seed`), and draws the batch's parameters from it
in step order. An epoch's views are therefore fixed by the seed and the epoch whatever happened before, so a
run resumed from a checkpoint (written at the end of an epoch) draws the views of the uninterrupted run, and
the global RNG (PGD's random starts, dropout) is left alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from ...data import info
from ...data.contrastive_augment import ViewAugment, augment
from ...seeds import epoch_seed
from ...errors import AdvlabError, ConfigError
from ...options import option
from ..base import PerturbationPart, RecipeEnv, Step, View, register

AUGMENT_STREAM = 0xA06  # the generator's stream in epoch_seed (the loader uses 0 and 1)


@dataclass
class AugmentOptions:
    scale_min: float = option(0.2, low=0, high=1, low_open=True)  # crop area, fraction of the image (SimCLR CIFAR)
    scale_max: float = option(1.0, low=0, high=1, low_open=True)
    ratio_min: float = option(3 / 4, low=0, low_open=True)  # crop aspect ratio width / height, log-uniform
    ratio_max: float = option(4 / 3, low=0, low_open=True)
    flip: Literal["auto", True, False] = "auto"  # auto: the dataset's default (DatasetInfo.flip; off for digits)
    jitter: float = option(0.5, low=0, high=2.5)  # colour-jitter strength s: factors 0.8 s, hue 0.2 s
    jitter_p: float = option(0.8, low=0, high=1)
    grayscale_p: float = option(0.2, low=0, high=1)  # colour images only


def resolve_flip(flip: str | bool, env: RecipeEnv) -> bool:
    """The flip setting: ``flip`` itself, or for ``auto`` the flip default of the training dataset's record
    (``env.dataset``); no flip when the dataset is not known (flipping digits or text would be wrong)."""
    if flip != "auto":
        return bool(flip)
    return info(env.dataset).flip if env.dataset is not None else False


@register("perturbation", "augment")
class AugmentPerturbation(PerturbationPart):
    """Views ``view1`` and ``view2``: two SimCLR augmentations of the batch (no attack, no labels)."""

    Options = AugmentOptions
    pairs_with = {"objective": "contrastive"}  # its two views are read by a contrastive loss
    views = {"view1": frozenset(), "view2": frozenset()}
    label_free = True

    def __init__(self, options: AugmentOptions, env: RecipeEnv) -> None:
        super().__init__(options, env)
        o = options
        for low, high in (("scale_min", "scale_max"), ("ratio_min", "ratio_max")):
            if getattr(o, low) > getattr(o, high):
                raise ConfigError(f"perturbation.{low} ({getattr(o, low):g}) must not exceed "
                                  f"perturbation.{high} ({getattr(o, high):g})")
        try:
            self.settings = ViewAugment(scale=(o.scale_min, o.scale_max), ratio=(o.ratio_min, o.ratio_max),
                                        flip=resolve_flip(o.flip, env), jitter=o.jitter, jitter_p=o.jitter_p,
                                        grayscale_p=o.grayscale_p)
        except AdvlabError as exc:
            raise ConfigError(f"perturbation: {exc}") from None
        self.generator = torch.Generator()
        self._seed(0)

    def _seed(self, epoch: int) -> None:
        self.generator.manual_seed(epoch_seed(self.env.seed, epoch, AUGMENT_STREAM + self.env.collective.rank))

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._seed(epoch)

    def epoch_state(self) -> dict[str, Any]:
        """The views' generator as the steps so far left it."""
        return {"generator": self.generator.get_state().clone()}

    def load_epoch_state(self, epoch: int, state: dict[str, Any]) -> None:
        super().load_epoch_state(epoch, state)
        if state:
            self.generator.set_state(state["generator"].cpu())

    def two_views(self, x: torch.Tensor) -> dict[str, View]:
        """``view1`` and ``view2`` of the clean batch x (B, C, H, W) in [0, 1], drawn in that order."""
        view1, _ = augment(x, self.settings, self.generator)
        view2, _ = augment(x, self.settings, self.generator)
        return {"view1": View(x=view1), "view2": View(x=view2)}

    def perturb(self, step: Step) -> dict[str, View]:
        return self.two_views(step.x.detach())
