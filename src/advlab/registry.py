"""A registry by name, used for models, activations, attack losses, recipe parts and presets."""
from __future__ import annotations

import fnmatch
import warnings
from typing import Callable, Generic, Iterator, TypeVar

from .errors import AdvlabError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects. Names double as config values and CLI choices."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False):
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def add(item: T) -> T:
            if name in self._items and not overwrite:
                warnings.warn(f"{self.kind} {name!r} is registered twice; the later one wins", stacklevel=3)
            self._items[name] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The object registered as ``name``; an AdvlabError naming the allowed names otherwise."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise AdvlabError(
                f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style pattern, sorted."""
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def lookup(table: dict[str, T], key: str, what: str) -> T:
    """``table[key]`` or an AdvlabError naming ``what`` and the allowed keys."""
    if key not in table:
        raise AdvlabError(f"unknown {what} {key!r}; allowed: {', '.join(sorted(table))}")
    return table[key]


Factory = Callable[..., T]
