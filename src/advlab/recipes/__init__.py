"""Recipe parts (labels, perturbation, weighting, objective), their registries, and the training step."""
from __future__ import annotations

from .base import (PART_KINDS, REGISTRIES, LabelsPart, ObjectivePart, Part, PerturbationPart, RecipeEnv, Step,
                   TermSpec, View, WeightingPart, combine, register, soft_cross_entropy, weighted_mean)
from .recipe import Recipe, create_recipe, check_recipe, part_class, part_options, part_registry
from .step import ATTACK_PRECISIONS, PRECISIONS, attack_autocast, autocast, compute_loss, train_step

__all__ = ["PART_KINDS", "REGISTRIES", "LabelsPart", "ObjectivePart", "Part", "PerturbationPart", "RecipeEnv",
           "Step", "TermSpec", "View", "WeightingPart", "combine", "register", "soft_cross_entropy",
           "weighted_mean", "Recipe", "create_recipe", "check_recipe", "part_class", "part_options",
           "part_registry", "ATTACK_PRECISIONS", "PRECISIONS", "attack_autocast", "autocast", "compute_loss", "train_step"]
