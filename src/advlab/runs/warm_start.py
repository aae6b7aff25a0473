"""Warm starts: a new run's model starts from the weights of an earlier run (``init.from``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..errors import AdvlabError
from ..models import encoder_state_dict, load_encoder_state
from .checkpoint import load_checkpoint, load_model, resolve_checkpoint


def load_warm_start(model: nn.Module, source: str | Path, spec: dict[str, Any], part: str = "model") -> None:
    """Load the weights of ``source`` (a run directory's best checkpoint, or a checkpoint file) into ``model``.

    ``part``: ``model``, all of them (the same architecture: ``spec``, the model's ``model_spec``, must equal the
    checkpoint's); ``encoder``, the encoder's only (any head on the same backbone, e.g. a linear head on a
    self-supervised encoder; the head keeps its initialisation).

    Raises:
        AdvlabError: ``source`` is missing, unreadable, or holds another architecture.
    """
    if part == "encoder":
        source_model, _ = load_model(source, "best")
        load_encoder_state(model, encoder_state_dict(source_model), f"init.from {source}")
        return
    ckpt = load_checkpoint(resolve_checkpoint(source, "best"))
    if ckpt.get("model_spec") != spec:
        raise AdvlabError(f"{source} holds model {ckpt.get('model_spec')}, this run builds {spec}")
    model.load_state_dict(ckpt["model"])
