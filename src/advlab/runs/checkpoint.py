"""Checkpoints: written atomically, read without executing code (torch.load with weights_only).

A checkpoint is a dict of tensors, numbers, strings, lists and dicts:
``format``, ``model`` (state dict), ``model_spec`` (arguments of ``advlab.models.create``),
``data`` (dataset name), ``eps``, ``norm``, ``epoch`` (number of finished epochs), and for resuming
``optimizer``, ``scheduler``, ``rng``, ``parts`` (per-sample state of the recipe parts), ``history``.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..models import create
from .atomic import write_atomic

FORMAT = "advlab-checkpoint-1"
CHECKPOINT_NAMES = ("best", "last")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tagged with :data:`FORMAT`) to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    write_atomic(path, buffer.getvalue())


def resolve_checkpoint(target: str | Path, which: str = "best") -> Path:
    """The checkpoint file named by ``target``: a file, or a run directory plus ``which`` (best or last)."""
    target = Path(target)
    if target.is_dir():
        if which not in CHECKPOINT_NAMES:
            raise CheckpointError(f"checkpoint must be one of {CHECKPOINT_NAMES}, got {which!r}")
        path = target / f"{which}.pt"
        if not path.exists():
            found = sorted(p.name for p in target.glob("*.pt"))
            raise CheckpointError(
                f"{target} is a folder without {path.name} (found: {', '.join(found) or 'no checkpoints'}); "
                "is it an advlab run directory?"
            )
        return path
    if not target.exists():
        raise CheckpointError(f"no such checkpoint or run directory: {target}")
    return target


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, refusing anything that would run code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an advlab checkpoint (expected format {FORMAT!r})")
    return payload


def load_model(target: str | Path, which: str = "best", device: str | torch.device = "cpu"):
    """Build the model a checkpoint (or run directory) describes and load its weights, in eval mode.

    Returns ``(model, checkpoint)``; a state dict that does not fit the model raises CheckpointError.
    """
    path = resolve_checkpoint(target, which)
    ckpt = load_checkpoint(path)
    spec = dict(ckpt["model_spec"])
    model = create(spec.pop("name"), **spec)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match model {ckpt['model_spec']}: {exc}") from None
    return model.to(device).eval(), ckpt
