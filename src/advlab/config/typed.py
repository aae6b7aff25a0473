"""A dataclass from a plain mapping, every key, type and range checked: how configs and part options are read."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from ..errors import ConfigError
from ..options import check_ranges
from .schema import PartConfig


def _check_value(key: str, value: Any, hint: Any) -> Any:
    """Coerce ``value`` to the annotated type ``hint`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: invalid value {value!r}; allowed: {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _check_value(key, value, inner[0])
        for hint_ in inner:  # several types (checkpoint.every: steps or a duration): the first that fits
            try:
                return _check_value(key, value, hint_)
            except ConfigError:
                continue
        names = {int: "an integer", str: "a string", bool: "true or false", float: "a number"}
        raise ConfigError(f"{key}: expected {' or '.join(names.get(h, str(h)) for h in inner)}, got {value!r}")
    if origin is list:
        if isinstance(value, (str, int, float)) and args and args[0] is str and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_value(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping (key: value), got {value!r}")
        return value
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string; eps reads best as 8/255
            try:
                top, _, bottom = value.partition("/")
                value = float(top) / float(bottom) if bottom else float(value)
            except (ValueError, ZeroDivisionError):
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def dataclass_from_mapping(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """``cls(**data)`` with every key, type and range checked; ConfigError naming ``prefix.key`` otherwise.

    Nested dataclass fields are built from nested mappings; :class:`PartConfig` fields keep their options
    as given (the recipe parts check them).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    attribute = {f.metadata.get("key", f.name): f.name for f in dataclasses.fields(cls)}  # config key -> attribute
    names = list(attribute)
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{prefix}." if prefix else ""
        allowed = (f"allowed keys{' in ' + prefix if prefix else ''}: {', '.join(map(str, names))}" if names
                   else f"{prefix or 'this section'} takes no keys")
        raise ConfigError(f"unknown key {where}{unknown[0]}; {allowed}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        attr = attribute[name]
        hint = hints[attr]
        if hint is PartConfig:
            kwargs[attr] = _build_part(value, key)
        elif dataclasses.is_dataclass(hint):
            kwargs[attr] = dataclass_from_mapping(hint, value, key)
        else:
            kwargs[attr] = _check_value(key, value, hint)
    built = cls(**kwargs)
    check_ranges(built, prefix)
    return built


def _build_part(value: Any, key: str) -> PartConfig:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise ConfigError(f"{key}: expected a mapping with a 'name', got {value!r}")
    if not isinstance(value["name"], str):
        raise ConfigError(f"{key}.name: expected a string, got {value['name']!r}")
    return PartConfig(value["name"], {k: v for k, v in value.items() if k != "name"})
