"""Options with their ranges: a dataclass field declares its bounds beside its default.

>>> @dataclass
... class NoilinOptions:
...     rate: float = option(0.05, low=0, high=1)

``check_ranges(options, "labels")`` then raises ``ConfigError("labels.rate: must be in [0, 1], got 2.0")``.
The config loader runs it on every section and every part's options, so a bad value is refused before a
run touches the disk.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from .errors import ConfigError


def option(default: Any = dataclasses.MISSING, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose numeric value (or each number of a list value) must lie in a range.

    ``low``/``high`` are inclusive bounds unless ``low_open``/``high_open``; None is unbounded. ``None`` as a
    value is never range-checked (it means "default" wherever a field allows it).
    """
    meta = {"range": (low, high, low_open, high_open)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def describe_range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """``[0, 1]``, ``(0, 1]``, ``>= 1``, ``> 0``: the range as the error messages write it."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"{'<' if high_open else '<='} {high:g}"


def _inside(value: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False
    if low is not None and (value <= low if low_open else value < low):
        return False
    if high is not None and (value >= high if high_open else value > high):
        return False
    return True


def check_ranges(options: Any, prefix: str) -> None:
    """ConfigError naming ``prefix.field`` and its range for the first value of ``options`` outside it."""
    for f in dataclasses.fields(options):
        bounds = f.metadata.get("range")
        if bounds is None:
            continue
        value = getattr(options, f.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not _inside(v, *bounds):
                key = f"{prefix}.{f.name}" if prefix else f.name
                shown = f"{value:g}" if isinstance(value, float) else repr(value)
                raise ConfigError(f"{key}: must be {describe_range(*bounds)}, got {shown}")
