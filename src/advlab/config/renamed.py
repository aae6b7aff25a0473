"""Config keys, values and units renamed by this release, still read (for one release) with a deprecation line.

Format 2 (``version: 2``, :data:`advlab.config.schema.CONFIG_VERSION`) follows docs/GLOSSARY.md. What format 1
called otherwise is converted when a config is read, and each conversion says so once on stderr (an
:class:`AdvlabDeprecationWarning`), so run directories made before still resume and evaluate:

- keys: ``data.name`` -> ``data.dataset``; the part option ``bn_mode`` -> ``model_mode`` (it sets the whole
  model's train/eval flag during an attack, not only batch norm's);
- values: ``evaluation.classifier: softmax`` -> ``linear`` (the model's own head); the evaluation attack
  ``pgd-knn`` -> ``knn-guide`` (``pgd-knn`` is the training perturbation part);
- units (format 1 files only: a file without ``version``): FGSM's ``step_size`` was a multiple of eps and is
  in pixels now, like every other step size.
"""
from __future__ import annotations

import warnings
from typing import Any

from ..errors import AdvlabDeprecationWarning, ConfigError
from .schema import CONFIG_VERSION, PART_KINDS

RENAMED_KEYS = {"data.name": "data.dataset"}
"""Old dotted key -> new dotted key, in every format."""

RENAMED_PART_OPTIONS = {"bn_mode": "model_mode"}
"""Old option -> new option of any recipe part (``labels``, ``perturbation``, ``weighting``, ``objective``)."""

RENAMED_VALUES = {
    "evaluation.classifier": {"softmax": "linear"},
    "validation.attack": {"pgd-knn": "knn-guide"},
    "evaluation.attacks": {"pgd-knn": "knn-guide"},
}
"""Dotted key -> {old value -> new value}, in every format (a list's items each)."""

RENAMED_FLAGS = {"--eval-n": "--evaluation-n"}
"""Old command-line flag -> new flag of ``advlab train``."""


def deprecated(message: str) -> None:
    """Say once, on stderr, that something old was read and what replaces it."""
    warnings.warn(message, AdvlabDeprecationWarning, stacklevel=3)


def _pop(data: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.get(part)
        if not isinstance(node, dict):
            return False, None
    if leaf not in node:
        return False, None
    return True, node.pop(leaf)


def _put(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _get(data: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def renamed_value(key: str, value: Any, where: str) -> Any:
    """``value`` of the dotted config ``key`` with a renamed value replaced (a list item by item), with a
    deprecation line naming ``where`` it was read; other values as they are."""
    table = RENAMED_VALUES.get(key, {})
    items = value if isinstance(value, list) else [value]
    new = [table.get(v, v) if isinstance(v, str) else v for v in items]
    for old, now in zip(items, new):
        if old != now:
            deprecated(f"{where}: {key} {old!r} is now {now!r}; {old!r} is read for this release only")
    return new if isinstance(value, list) else new[0]


def upgrade(data: dict[str, Any], where: str, *, version: int) -> dict[str, Any]:
    """A copy of the config mapping ``data`` (one file's own mapping, or overrides) in the current format.

    ``version``: the format ``data`` is in when it does not say (``version`` key): 1 for a file, the current
    one for mappings built in code and overrides. Renamed keys and values are converted in any format; a
    format-1 FGSM ``step_size`` (a multiple of eps) becomes pixels when the same mapping gives ``eps``.

    Raises:
        ConfigError: a key given under its old and its new name, or a format-1 FGSM step size without the
            eps to convert it with.
    """
    data = _copy(data)
    given = data.pop("version", version)
    if isinstance(given, bool) or not isinstance(given, int) or not 1 <= given <= CONFIG_VERSION:
        raise ConfigError(f"{where}: version: expected a config format from 1 to {CONFIG_VERSION}, got {given!r}")
    for old, new in RENAMED_KEYS.items():
        found, value = _pop(data, old)
        if found:
            if _get(data, new)[0]:
                raise ConfigError(f"{where}: {old} and {new} are one key ({old} is its old name); give {new} only")
            deprecated(f"{where}: {old} is now {new}; {old} is read for this release only")
            _put(data, new, value)
    for kind in PART_KINDS:
        section = data.get(kind)
        if not isinstance(section, dict):
            continue
        for old, new in RENAMED_PART_OPTIONS.items():
            if old in section:
                if new in section:
                    raise ConfigError(f"{where}: {kind}.{old} and {kind}.{new} are one option; give {kind}.{new} only")
                deprecated(f"{where}: {kind}.{old} is now {kind}.{new}; {old} is read for this release only")
                section[new] = section.pop(old)
    for key in RENAMED_VALUES:
        found, value = _get(data, key)
        if found:
            _put(data, key, renamed_value(key, value, where))
    if given < 2:
        _fgsm_step_size_in_pixels(data, where)
    return data


def _fgsm_step_size_in_pixels(data: dict[str, Any], where: str) -> None:
    """Format 1 gave FGSM's step size in units of eps (Wong et al.'s 1.25): convert it to pixels."""
    section = data.get("perturbation")
    if not (isinstance(section, dict) and section.get("name") == "fgsm" and "step_size" in section):
        return
    eps = data.get("eps")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise ConfigError(f"{where}: perturbation.step_size of fgsm is in pixels now (it was a multiple of eps) and "
                          "this file, of the old format (no `version`), gives no eps to convert it with; write "
                          "`version: 2` and the step size in pixels")
    scale = section["step_size"]
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        section["step_size"] = scale * eps
        deprecated(f"{where}: fgsm's perturbation.step_size {scale} was a multiple of eps; it is in pixels now "
                   f"({scale} x eps {eps} = {scale * eps:g}); write `version: 2` with step sizes in pixels")


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
