"""Checkpoints: written atomically, read without executing code (torch.load with weights_only).

A checkpoint is a dict of tensors, numbers, strings, lists and dicts:
``format``, ``model`` (state dict), ``model_spec`` (arguments of ``advlab.models.create_model``),
``dataset`` (its name; checkpoints written before it was renamed call it ``data``, read as ``dataset``),
``eps``, ``norm``, ``epoch`` (number of finished epochs), and for resuming ``optimizer``, ``scaler``, ``rng``,
``parts`` (per-sample state of the recipe parts), ``history``, ``best``, ``config``; a mid-epoch checkpoint
(``mid-epoch.pt``) adds ``mid_epoch``, the epoch in progress (``advlab.engine.state``).
"""
from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import AdvlabError, CheckpointError
from ..models import create_model
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
    payload = read_torch_file(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an advlab checkpoint (expected format {FORMAT!r}); weights made "
                              "elsewhere (a state dict .pt/.pth or .safetensors) are read by init.from=FILE and "
                              "advlab eval --model NAME --weights FILE")
    if "dataset" not in payload and "data" in payload:  # the dataset's name, under its old key
        payload["dataset"] = payload.pop("data")
    return payload


def read_torch_file(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """What ``torch.load(path, weights_only=True)`` reads (tensors, numbers, strings, lists, dicts), refusing
    anything that would run code; CheckpointError (one line) for a missing, foreign or truncated file."""
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    try:
        with warnings.catch_warnings(record=True) as caught:  # torch warns about the files it then refuses
            warnings.simplefilter("always")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's safe unpickler refused the file; nothing in it ran
        refused = next((line.strip() for line in str(exc).splitlines() if "Unsupported global" in line), None)
        why = (f"it references Python objects that could run code ({refused.split(':', 2)[-1].split(' was ')[0].strip()})"
               if refused else "not a PyTorch checkpoint, truncated, or holding objects that could run code")
        raise CheckpointError(f"cannot read checkpoint {path}: {why}; advlab reads only its own checkpoints, "
                              "without running code from the file") from None
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch checkpoint, or truncated "
                              f"({_first_line(exc)})") from None
    for w in caught:  # a file that loaded: its warnings are the caller's to see
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return payload


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters): torch's messages run over many lines."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_model(target: str | Path, which: str = "best", device: str | torch.device = "cpu"):
    """Build the model a checkpoint (or run directory) describes and load its weights, in eval mode.

    Returns ``(model, checkpoint)``. Raises CheckpointError (one line) for a file that is not an advlab
    checkpoint, a ``model_spec`` that is not a mapping with a model ``name`` advlab can build, and a state
    dict that does not fit the model (wrong architecture); an unknown device is an AdvlabError.
    """
    path = resolve_checkpoint(target, which)
    ckpt = load_checkpoint(path)
    spec = ckpt.get("model_spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise CheckpointError(f"checkpoint {path} does not describe a model: model_spec should be a mapping with "
                              f"a model name, got {spec!r}")
    if not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"checkpoint {path} holds no model weights (a state dict under 'model')")
    spec = dict(spec)
    try:
        model = create_model(spec.pop("name"), **spec)
    except AdvlabError as exc:
        raise CheckpointError(f"checkpoint {path}: cannot build its model: {exc}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a model source's own failure
        raise CheckpointError(f"checkpoint {path}: cannot build its model {ckpt['model_spec'].get('name')!r}: "
                              f"{_first_line(exc)}") from None
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        problems = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        first = problems[0] if problems else _first_line(exc)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(f"checkpoint {path} does not match model {ckpt['model_spec']}: {first}{more}") from None
    return model.to(device).eval(), ckpt
