"""Weights made elsewhere: a plain state dict (``.pt``, ``.pth``, ``.bin``) or a ``.safetensors`` file, read
without executing code and loaded into a network with one message for what did not fit.

:func:`read_weights` returns ``{key: tensor}``: ``torch.load(weights_only=True)`` for PyTorch files (a state dict,
or one under a ``state_dict``/``model``/``model_state_dict``/``state_dict_ema`` key as training scripts save it),
``safetensors.torch.load_file`` for ``.safetensors`` (the optional ``safetensors`` package). :func:`load_weights`
matches keys after dropping the prefixes other tools add (``module.`` from DataParallel/DistributedDataParallel,
``_orig_mod.`` from ``torch.compile``, ``model.`` from wrappers such as advlab's own), and with ``strict`` refuses
any missing, unexpected or reshaped key in one line listing them; without it loads what fits and reports the rest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from .checkpoint import FORMAT, read_torch_file

NESTED_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema")
"""Keys under which training scripts save the state dict inside a larger file (tried in this order)."""

PREFIXES = ("module.", "_orig_mod.", "model.")
"""Prefixes other tools put before every key: DataParallel/DDP, torch.compile, wrappers."""

SHOWN = 4  # keys named per kind in a message


def _is_state(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in value.items())


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (``.safetensors``, or a PyTorch file read with ``weights_only=True``).

    Raises:
        CheckpointError: no such file; ``.safetensors`` without the safetensors package, or not such a file;
            a PyTorch file that holds objects that could run code, is truncated, or holds no state dict (its
            top-level keys named).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such weights file: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError(f"{path}: reading .safetensors needs the safetensors package (pip install "
                                  "safetensors, or advlab's extra advlab[safetensors])") from None
        try:
            return dict(load_file(str(path)))
        except Exception as exc:
            raise CheckpointError(f"cannot read {path}: not a safetensors file, or truncated "
                                  f"({type(exc).__name__})") from None
    payload = read_torch_file(path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        return dict(payload["model"])  # an advlab checkpoint: its model's weights
    if _is_state(payload):
        return dict(payload)
    if isinstance(payload, dict):
        for key in NESTED_KEYS:
            if _is_state(payload.get(key)):
                return dict(payload[key])
        keys = ", ".join(map(str, list(payload)[:8]))
        raise CheckpointError(f"{path} holds no state dict: its top-level keys are {keys} (expected tensors, or a "
                              f"state dict under one of {', '.join(NESTED_KEYS)})")
    raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a state dict (a mapping of names to "
                          "tensors); save model.state_dict()")


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def match_keys(state: dict[str, torch.Tensor], target: set[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state`` with the :data:`PREFIXES` removed that make more of its keys match ``target`` (each prefix tried
    in turn, repeatedly: ``module.model.``), and the prefixes removed."""
    removed: list[str] = []
    best = len(set(state) & target)
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if not any(k.startswith(prefix) for k in state):
                continue
            stripped = _strip(state, prefix)
            hits = len(set(stripped) & target)
            if hits > best:
                state, best, changed = stripped, hits, True
                removed.append(prefix)
    return state, removed


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN])
    return shown + (f", ... ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")


def load_weights(network: nn.Module, state: dict[str, torch.Tensor], *, strict: bool = True, source: str = "weights",
                 exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Copy ``state`` into ``network`` (in place) and return what happened:
    ``{"loaded": n, "missing": [...], "unexpected": [...], "reshaped": [...], "prefixes_removed": [...]}``.

    Keys are matched after :func:`match_keys`; ``exclude``: key prefixes of ``network`` that are neither loaded
    nor reported missing (a classifier that keeps its initialisation). ``strict``: any missing, unexpected or
    reshaped key is a CheckpointError (one line naming ``source`` and a few keys of each kind, with the hint
    ``init.strict: false``); without it the keys that fit are loaded and the rest keep their initialisation.
    """
    own = {k: v for k, v in network.state_dict().items() if not (exclude and k.startswith(exclude))}
    state, removed = match_keys(state, set(own))
    if exclude:
        state = {k: v for k, v in state.items() if not k.startswith(exclude)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    fits = {k: state[k] for k in set(own) & set(state) if k not in reshaped}
    report = {"loaded": len(fits), "missing": missing, "unexpected": unexpected, "reshaped": reshaped,
              "prefixes_removed": removed}
    if strict and (missing or unexpected or reshaped):
        parts = [f"{len(missing)} missing ({_names(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({_names(unexpected)})" if unexpected else "",
                 "{} of another shape ({})".format(len(reshaped), _names(
                     [f"{k} {tuple(state[k].shape)} here {tuple(own[k].shape)}" for k in reshaped])) if reshaped else ""]
        stripped = f" after removing the prefix {' + '.join(removed)}" if removed else ""
        raise CheckpointError(f"{source} does not fit the model{stripped}: {'; '.join(p for p in parts if p)}; "
                              "set init.strict: false to load the keys that fit and keep the rest initialised "
                              "(e.g. a new head)")
    network.load_state_dict(fits, strict=False)
    return report


def describe_report(report: dict[str, Any], source: str) -> str:
    """One line saying what :func:`load_weights` loaded and left out."""
    text = f"{source}: loaded {report['loaded']} tensors"
    if report["prefixes_removed"]:
        text += f" (prefix {' + '.join(report['prefixes_removed'])} removed)"
    left = [f"{len(report[k])} {k} ({_names(report[k])})" for k in ("missing", "unexpected", "reshaped") if report[k]]
    return text + ("; not loaded: " + "; ".join(left) if left else "")
