"""Configs read and written: presets by name, YAML files, dotted ``key=value`` overrides, YAML out.

Every file's own mapping is brought to the current format (:func:`advlab.config.renamed.upgrade`) before it
is merged with what it inherits; presets shipped with advlab are always current.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .renamed import upgrade
from .schema import CONFIG_VERSION, PART_KINDS, TrainConfig
from .typed import dataclass_from_mapping

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


def from_dict(data: dict[str, Any] | None) -> TrainConfig:
    """A TrainConfig from a plain (possibly partial) mapping in the current format (or the format its
    ``version`` names), keys, types and ranges checked; ConfigError naming the key otherwise.

    Names chosen from registries (dataset, model, parts, attacks, ...) and each part's options are checked
    by ``advlab.engine.config_checks.check_config``, which every run calls before it touches the disk.
    """
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping, got {data!r}")
    return dataclass_from_mapping(TrainConfig, upgrade(data or {}, "config", version=CONFIG_VERSION), "")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (line and column, 1-based)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping of a YAML file; ConfigError naming the file for an unreadable file, text that is not
    UTF-8 YAML, a file with no settings (empty, only comments, or ``{}``: almost certainly a mistake, which
    would otherwise run every default) or a top level that is not a mapping."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}); expected a YAML config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if data is None or data == {}:
        raise ConfigError(f"{path}: no settings in it (empty, only comments or {{}}); a config sets at least one key, "
                          "e.g. inherits: pgd-at")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``. A part whose ``name`` changes starts afresh."""
    out = dict(base)
    for key, value in update.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            if key in PART_KINDS and "name" in value and value["name"] != old.get("name"):
                out[key] = dict(value)
            else:
                out[key] = merge(old, value)
        else:
            out[key] = value
    return out


def preset_dict(name_or_path: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The plain mapping of a preset (by name) or YAML file, with ``inherits`` resolved."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        if path.suffix in (".yaml", ".yml"):
            raise ConfigError(f"no such config file: {path}; give an existing YAML file or a preset name "
                              f"({', '.join(preset_names())})")
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown preset {name_or_path!r}; allowed: {', '.join(preset_names())}")
    if str(path) in _seen:
        raise ConfigError(f"preset {path} inherits from itself: {' -> '.join(_seen + (str(path),))}")
    own = _read_yaml(path)
    parent = own.pop("inherits", None)
    if parent is not None and not isinstance(parent, str):
        raise ConfigError(f"{path}: inherits: expected a preset name or YAML path, got {parent!r}")
    if path.resolve().parent != PRESET_DIR:  # a user's file, or a run's config.yaml: maybe an older format
        own = upgrade(own, str(path), version=1)
    own.setdefault("preset", path.stem)
    data = merge(preset_dict(parent, _seen + (str(path),)), own) if parent else own
    return data


def parse_override(item: str) -> dict[str, Any]:
    """``"a.b=3"`` -> ``{"a": {"b": 3}}``; the value is read as YAML (numbers, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    if not all(p.strip() for p in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key; write dotted.key=value, e.g. optimizer.lr=0.05")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(preset: str | None = None, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """A preset (name or YAML path) with overrides applied, validated."""
    data = preset_dict(preset) if preset else {}
    if isinstance(overrides, dict):
        data = merge(data, upgrade(overrides, "overrides", version=CONFIG_VERSION))
    else:
        for item in overrides or []:
            data = merge(data, upgrade(parse_override(item), f"override {item!r}", version=CONFIG_VERSION))
    return from_dict(data)


def dump_config(config: TrainConfig) -> str:
    """The config as YAML text (what ``config.yaml`` holds)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write ``dump_config(config)`` to ``path`` (a run writes it atomically through ``advlab.runs``)."""
    Path(path).write_text(dump_config(config))


def read_config(path: str | Path) -> TrainConfig:
    """The config a run's ``config.yaml`` (or any full YAML config) holds, in the current format."""
    return from_dict(upgrade(_read_yaml(Path(path)), str(path), version=1))
