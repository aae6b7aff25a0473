"""Recipe parts (labels, perturbation, weighting, objective) and their registries."""
from __future__ import annotations

from ..registry import Registry
from .base import (REGISTRIES, LabelsPart, ObjectivePart, Part, PerturbationPart, RecipeEnv, Step,
                   WeightingPart, register)

_LOADED = False


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    import importlib
    import pkgutil

    for kind in REGISTRIES:
        package = importlib.import_module(f"{__name__}.{kind if kind != 'objective' else 'objectives'}")
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
    _LOADED = True


def part_registry(kind: str) -> Registry:
    """The registry of one part kind, with every built-in part loaded."""
    _load_all()
    return REGISTRIES[kind]


def build_part(kind: str, name: str, options: dict, env: RecipeEnv) -> Part:
    """Instantiate the part ``name`` of ``kind`` with validated ``options``."""
    cls = part_registry(kind).get(name)
    return cls(cls.Options(**options), env)


__all__ = ["LabelsPart", "ObjectivePart", "Part", "PerturbationPart", "RecipeEnv", "Step", "WeightingPart",
           "register", "part_registry", "build_part"]
