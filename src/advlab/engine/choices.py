"""Every config key whose value is chosen from a registry, and the registry it comes from.

The one source of the allowed values for config validation, CLI help and ``advlab presets``: a new model,
activation, optimizer, schedule, dataset, part or attack is registered once and appears everywhere.
"""
from __future__ import annotations

from typing import Any, Callable

from ..attacks import NORMS
from ..config import PART_KINDS, TrainConfig
from ..data import AUGMENTATIONS, DATASETS, LOADERS
from ..data.scenarios import NOISE_KINDS
from ..errors import AdvlabError, ConfigError
from ..evaluation import AA_VERSIONS, CLASSIFIERS, EVAL_ATTACKS, eval_attack_names
from ..models import (FREEZE, HEADS, KNN_METRICS, KNN_VOTES, check_model_name, list_activations, list_models,
                      source_syntax)
from ..recipes import ATTACK_PRECISIONS, PRECISIONS, part_registry
from .acceleration import COMPILE_MODES
from ..runs import CHECKPOINT_NAMES
from .optimizers import OPTIMIZERS
from .schedule import SCHEDULES

CHOICES: dict[str, Callable[[], list[str]]] = {
    "data.dataset": lambda: DATASETS.names(),
    "data.label_noise.kind": lambda: list(NOISE_KINDS),
    "data.augment": lambda: ["auto", *AUGMENTATIONS],
    "data.loader": lambda: list(LOADERS),
    "model.name": lambda: list_models() + source_syntax(),
    "model.activation": list_activations,
    "model.head": lambda: list(HEADS),
    "model.freeze": lambda: list(FREEZE),
    "knn.metric": lambda: list(KNN_METRICS),
    "knn.vote": lambda: list(KNN_VOTES),
    "evaluation.classifier": lambda: list(CLASSIFIERS),
    "norm": lambda: list(NORMS),
    "precision": lambda: ["auto", *PRECISIONS],
    "attack_precision": lambda: list(ATTACK_PRECISIONS),
    "compile": lambda: list(COMPILE_MODES),
    "optimizer.name": lambda: OPTIMIZERS.names(),
    "schedule.name": lambda: SCHEDULES.names(),
    "validation.attack": lambda: EVAL_ATTACKS.names(),
    "evaluation.attacks": eval_attack_names,
    "evaluation.autoattack_version": lambda: list(AA_VERSIONS),
    "evaluation.checkpoints": lambda: list(CHECKPOINT_NAMES),
    **{f"{kind}.name": (lambda kind=kind: part_registry(kind).names()) for kind in PART_KINDS},
}


CHECKS: dict[str, Callable[[Any], None]] = {"model.name": check_model_name}
"""Keys whose values are open beyond their registry (a model from a source, ``timm:<name>``): checked by this
function (AdvlabError) instead of membership in the list, which then only serves the help."""


def choices(key: str) -> list[str]:
    """The allowed values of the dotted config ``key`` (KeyError if the key is not a choice)."""
    return list(CHOICES[key]())


def choices_text(key: str) -> str:
    """``a, b, c``: the allowed values of ``key`` for help texts."""
    return ", ".join(choices(key))


def flag_help(key: str, text: str) -> str:
    """Help text of a command-line flag that sets config ``key``: ``text``, the allowed values when ``key`` is a
    choice, and the key."""
    try:
        return f"{text}: {choices_text(key)} (config key {key})"
    except KeyError:
        return f"{text} (config key {key})"


def _get(config: TrainConfig, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def check_choices(config: TrainConfig) -> None:
    """ConfigError naming the key and the allowed values for the first value not in its registry."""
    for key, allowed_of in CHOICES.items():
        value = _get(config, key)
        allowed = allowed_of()
        for item in value if isinstance(value, list) else [value]:
            if key in CHECKS:
                try:
                    CHECKS[key](item)
                except AdvlabError as exc:
                    raise ConfigError(f"{key}: {exc}") from None
            elif item not in allowed:
                raise ConfigError(f"{key}: invalid value {item!r}; allowed: {', '.join(allowed)}")
