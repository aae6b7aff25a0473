"""A recipe: one part of each kind, built from config sections and checked to fit together."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Iterator

from ..config import dataclass_from_mapping
from ..errors import ConfigError
from ..options import check_ranges
from ..registry import Registry
from .base import (PART_KINDS, REGISTRIES, LabelsPart, ObjectivePart, Part, PerturbationPart, RecipeEnv,
                   WeightingPart)

_PACKAGES = {"labels": "labels", "perturbation": "perturbation", "weighting": "weighting",
             "objective": "objectives"}
_LOADED = False


def _load_all() -> None:
    """Import every built-in part module once, so that each registers itself."""
    global _LOADED
    if _LOADED:
        return
    for kind in PART_KINDS:
        package = importlib.import_module(f"{__package__}.{_PACKAGES[kind]}")
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
    _LOADED = True


def part_registry(kind: str) -> Registry:
    """The registry of one part kind (``labels``, ``perturbation``, ``weighting``, ``objective``), every
    built-in part loaded."""
    if kind not in REGISTRIES:
        raise ConfigError(f"unknown part kind {kind!r}; allowed: {', '.join(PART_KINDS)}")
    _load_all()
    return REGISTRIES[kind]


def part_class(kind: str, name: str) -> type[Part]:
    """The class registered as ``name`` in the ``kind`` registry; ConfigError naming ``kind.name`` and the
    allowed names otherwise."""
    registry = part_registry(kind)
    if name not in registry:
        raise ConfigError(f"{kind}.name: unknown {kind} part {name!r}; allowed: {', '.join(registry.names())}")
    return registry.get(name)


def part_options(kind: str, name: str, options: dict[str, Any]) -> Any:
    """The part's ``Options`` dataclass built from ``options``: keys, types and ranges checked, ConfigError
    naming ``kind.key`` otherwise."""
    cls = part_class(kind, name)
    built = dataclass_from_mapping(cls.Options, dict(options), kind)
    check_ranges(built, kind)
    return built


@dataclass
class Recipe:
    """The four parts of a training step."""

    labels: LabelsPart
    perturbation: PerturbationPart
    weighting: WeightingPart
    objective: ObjectivePart

    def parts(self) -> Iterator[tuple[str, Part]]:
        """``(kind, part)`` in :data:`PART_KINDS` order."""
        for kind in PART_KINDS:
            yield kind, getattr(self, kind)


def _describe(kind: str, part: Part) -> str:
    return f"{kind} {part.name!r}"


def check_recipe(recipe: Recipe) -> None:
    """ConfigError naming both parts when one part needs what another does not give.

    Checks: every view a part or the objective reads is made by the perturbation (or is ``clean``) with the
    facts it needs; soft targets come from a labels part that gives them; a weighting's ``term`` names a term
    of the objective; a part that needs the meta split has one.
    """
    made = {"clean": frozenset(), **recipe.perturbation.views}
    p = _describe("perturbation", recipe.perturbation)
    for kind, part in recipe.parts():
        for view, facts in part.needs_views.items():
            if view not in made:
                raise ConfigError(f"{_describe(kind, part)} reads view {view!r}, which {p} does not make "
                                  f"(it makes: {', '.join(made)})")
            missing = sorted(set(facts) - made[view])
            if missing:
                raise ConfigError(f"{_describe(kind, part)} needs {', '.join(missing)} of view {view!r}, which {p} "
                                  "does not give; choose a perturbation that runs an attack (pgd, fat, fgsm)")
        if part.needs_soft_targets and not recipe.labels.soft_targets:
            raise ConfigError(f"{_describe(kind, part)} reads soft loss targets, which "
                              f"{_describe('labels', recipe.labels)} does not give; use labels self-adaptive or sglr")
        for view in part.needs_outputs:
            if kind != "objective" and view not in recipe.objective.forward_views:
                raise ConfigError(f"{_describe(kind, part)} reads the model's outputs on view {view!r}, which "
                                  f"{_describe('objective', recipe.objective)} does not compute (it computes: "
                                  f"{', '.join(recipe.objective.forward_views)})")
        if part.needs_meta_split and part.env.meta_images is None:
            raise ConfigError(f"{_describe(kind, part)} needs the meta split: set data.meta_size > 0")
        if part.needs_train_split and (part.env.train_images is None or part.env.train_labels is None):
            raise ConfigError(f"{_describe(kind, part)} needs the training split (RecipeEnv.train_images and "
                              "train_labels), which the trainer gives; pass them when building the recipe yourself")
    objective = recipe.objective
    for view in objective.forward_views:
        if view not in made:
            raise ConfigError(f"{_describe('objective', objective)} trains on view {view!r}, which {p} does not "
                              f"make (it makes: {', '.join(made)})")
    names = [s.name for s in objective.term_specs]
    term = getattr(recipe.weighting.options, "term", "auto")
    if term not in ("auto", "all") and term not in names:
        raise ConfigError(f"{_describe('weighting', recipe.weighting)} weights term {term!r}, which "
                          f"{_describe('objective', objective)} does not have (its terms: {', '.join(names)}; "
                          "or auto, all)")


def create_recipe(sections: dict[str, tuple[str, dict[str, Any]]], env: RecipeEnv) -> Recipe:
    """Build and check a recipe from ``{kind: (name, options)}``; ConfigError for a bad option or a misfit."""
    missing = [k for k in PART_KINDS if k not in sections]
    if missing:
        raise ConfigError(f"a recipe needs one part of each kind; missing: {', '.join(missing)}")
    parts = {}
    for kind in PART_KINDS:
        name, options = sections[kind]
        cls = part_class(kind, name)
        parts[kind] = cls(part_options(kind, name, options), env)
    recipe = Recipe(**parts)
    check_recipe(recipe)
    for _, part in recipe.parts():
        part.bind(recipe)
    return recipe
