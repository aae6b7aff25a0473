"""A network from a model source, made to keep advlab's contract: pixels in [0, 1] in, logits out.

:class:`ExternalModel` puts the input normalisation inside the model (``model.normalize``: a :class:`Normalize`
layer, or none) and picks the logits out of a dict or tuple output (``model.output``: a key or an index). A
network that returns anything but a tensor without ``model.output`` set is refused with one line that says what
it returned. Its state-dict keys are ``normalize.mean``, ``normalize.std`` (when it normalises) and the network's
own keys under ``model.``, as :func:`advlab.models.with_normalization` lays them out.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence, Union

import torch
from torch import nn

from ..errors import AdvlabError
from .normalize import Normalize

OutputKey = Union[str, int, None]


def describe_output(out: Any) -> str:
    """What a network returned, in a few words: ``a tensor (2, 10)``, ``a dict with keys ['logits', 'aux']``,
    ``a tuple of 2 (tensor (2, 10), tensor (2, 512))``."""
    if torch.is_tensor(out):
        return f"a tensor {tuple(out.shape)}"
    if isinstance(out, Mapping):
        return f"a {type(out).__name__} with keys {list(out.keys())}"
    if isinstance(out, (tuple, list)):
        items = ", ".join(f"tensor {tuple(v.shape)}" if torch.is_tensor(v) else type(v).__name__ for v in out[:4])
        return f"a {type(out).__name__} of {len(out)} ({items}{', ...' if len(out) > 4 else ''})"
    return f"a {type(out).__name__}"


def select_output(out: Any, output: OutputKey, what: str) -> torch.Tensor:
    """The logits tensor inside ``out``, the output of ``what`` (a model name, for the message).

    ``output`` None: ``out`` must be a tensor. A str: the key of a mapping (or the field of a named tuple). An
    int: the index of a tuple or list. AdvlabError (one line, naming what came back and the key to set)
    otherwise.
    """
    if output is None:
        if torch.is_tensor(out):
            return out
        raise AdvlabError(f"{what} returned {describe_output(out)}, not a logits tensor: set model.output to the "
                          "key or index of its logits (advlab eval: --output)")
    if torch.is_tensor(out):
        raise AdvlabError(f"model.output {output!r} picks from a dict or tuple, but {what} returned {describe_output(out)}: "
                          "leave model.output unset")
    if isinstance(out, Mapping):
        if output not in out:
            raise AdvlabError(f"model.output {output!r} is not a key of what {what} returned: "
                              f"{describe_output(out)}")
        picked = out[output]
    elif isinstance(out, (tuple, list)):
        fields = getattr(out, "_fields", None)  # a named tuple
        if isinstance(output, str) and fields and output in fields:
            picked = getattr(out, output)
        elif isinstance(output, int) and not isinstance(output, bool) and -len(out) <= output < len(out):
            picked = out[output]
        else:
            raise AdvlabError(f"model.output {output!r} is not an index of what {what} returned: "
                              f"{describe_output(out)}")
    else:
        raise AdvlabError(f"{what} returned {describe_output(out)}: model.output picks from a dict, tuple or list only")
    if not torch.is_tensor(picked):
        raise AdvlabError(f"model.output {output!r} of {what} is {describe_output(picked)}, not a logits tensor")
    return picked


def check_output_key(output: Any, key: str = "model.output") -> OutputKey:
    """``output`` if it is None, a string or an integer; AdvlabError naming ``key`` otherwise."""
    if output is None or isinstance(output, str) or (isinstance(output, int) and not isinstance(output, bool)):
        return output
    raise AdvlabError(f"{key} must be a key (a string) or an index (an integer) of the model's output, got {output!r}")


class ExternalModel(nn.Module):
    """``network`` behind a normalisation layer, with its logits picked out of its output.

    ``forward(x)``: x (B, C, H, W) pixels in [0, 1] -> ``select_output(network(normalize(x)), output)`` (B, K).
    ``normalize``: ``(mean, std)`` per channel in pixel units, or None (the network gets the pixels as they
    are). ``name``: the model's name (e.g. ``timm:resnet18``), for messages. The network is ``self.model``.
    """

    def __init__(self, network: nn.Module, name: str,
                 normalize: tuple[Sequence[float], Sequence[float]] | None = None, output: OutputKey = None) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise AdvlabError(f"model {name!r} is a {type(network).__name__}, not an nn.Module")
        self.normalize = Normalize(*normalize) if normalize is not None else nn.Identity()
        self.model = network
        self.name = name
        self.output = check_output_key(output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return select_output(self.model(self.normalize(x)), self.output, f"model {self.name!r}")

    def extra_repr(self) -> str:
        return f"name={self.name!r}" + (f", output={self.output!r}" if self.output is not None else "")
