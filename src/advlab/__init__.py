"""advlab: adversarial training of image classifiers, every method in one composable framework.

The heavy submodules are imported on first use, so ``advlab --help`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import AdvlabError, CheckpointError, ConfigError, DataError

__version__ = "0.1.0"
__all__ = [
    "AdvlabError", "CheckpointError", "ConfigError", "DataError",
    "data", "models", "attacks", "evaluate", "evaluation", "train", "resume", "probe", "load_model", "recipes", "runs", "__version__",
]

_LAZY = {
    "data": ("advlab.data", None),
    "models": ("advlab.models", None),
    "attacks": ("advlab.attacks", None),
    "evaluate": ("advlab.evaluation", "evaluate"),
    "evaluation": ("advlab.evaluation", None),
    "train": ("advlab.engine.train", "train"),
    "resume": ("advlab.engine.train", "resume"),
    "probe": ("advlab.engine.probe", "probe"),
    "load_model": ("advlab.runs", "load_model"),
    "recipes": ("advlab.recipes", None),
    "runs": ("advlab.runs", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'advlab' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    if attr is None:
        globals()[name] = value
    return value
