"""Warm starts: a new run's model starts from the weights of an earlier run or of a file made elsewhere
(``init.from``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..errors import AdvlabError
from ..models import ContrastiveModel, bare_network, encoder_state_dict, load_encoder_state
from ..models.representation import final_linear
from .checkpoint import FORMAT, load_model, read_torch_file, resolve_checkpoint
from .weights import load_weights, read_weights

SPEC_NOTES = ("registered_in",)
"""Model-spec keys that say where a model came from, not what it is: left out when two specs are compared."""


def same_model(a: Any, b: Any) -> bool:
    """Whether two model specs describe the same model (:data:`SPEC_NOTES` left out)."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return a == b
    return {k: v for k, v in a.items() if k not in SPEC_NOTES} == {k: v for k, v in b.items() if k not in SPEC_NOTES}


def load_warm_start(model: nn.Module, source: str | Path, spec: dict[str, Any], part: str = "model",
                    strict: bool = True) -> dict[str, Any] | None:
    """Load the weights of ``source`` into ``model``: a run directory (its best checkpoint) or an advlab
    checkpoint file, or weights made elsewhere (a plain state dict ``.pt``/``.pth``/``.bin`` or ``.safetensors``,
    read without executing code, :mod:`advlab.runs.weights`).

    ``part``: ``model``, all of them (an advlab checkpoint: ``spec``, the model's ``model_spec``, must equal the
    checkpoint's; a file from elsewhere: its keys those of the bare network, :func:`advlab.models.bare_network`);
    ``encoder``, the encoder's only (any head on the same backbone, e.g. a linear head on a self-supervised
    encoder; the head keeps its initialisation). ``strict=False`` loads the keys that fit (e.g. all but a head for
    another number of classes) and leaves the rest initialised.

    Returns the report of :func:`advlab.runs.weights.load_weights` for a file from elsewhere or a non-strict load,
    None for an exact load of an advlab checkpoint.

    Raises:
        AdvlabError: ``source`` is missing, unreadable, or holds another architecture (one line listing
            missing, unexpected and reshaped keys).
    """
    path = resolve_checkpoint(source, "best")
    payload = None if path.suffix == ".safetensors" else read_torch_file(path)
    is_advlab = isinstance(payload, dict) and payload.get("format") == FORMAT
    if is_advlab and part == "encoder":
        source_model, _ = load_model(source, "best")
        load_encoder_state(model, encoder_state_dict(source_model), f"init.from {source}")
        return None
    if is_advlab and part == "model":
        if same_model(payload.get("model_spec"), spec):
            model.load_state_dict(payload["model"])
            return None
        if strict:
            raise AdvlabError(f"{source} holds model {payload.get('model_spec')}, this run builds {spec}; set "
                              "init.strict: false to load the weights that fit")
        return load_weights(model, payload["model"], strict=False, source=f"init.from {source}")
    state = read_weights(path)
    network = bare_network(model)
    exclude: tuple[str, ...] = ()
    if part == "encoder" and not isinstance(model, ContrastiveModel):  # a projection model's encoder has no head
        head, _ = final_linear(network)
        exclude = (head + ".",)
    return load_weights(network, state, strict=strict, source=f"init.from {source}", exclude=exclude)
