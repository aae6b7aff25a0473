"""``advlab eval --model``: a model advlab did not train, built from its flags (``--model``, ``--weights``,
``--normalize``, ``--output``, ``--model-option``) and checked before it is attacked."""
from __future__ import annotations

import argparse
from typing import Any

import torch

from .. import data
from ..attacks.context import eval_mode
from ..attacks.norms import get_norm
from ..errors import AdvlabError
from ..models import bare_network, create_model, model_source
from ..runs import load_weights, read_weights
from .runner import predict
from .threat import check_eps, parse_eps


MODEL_FLAGS = ("weights", "normalize", "output", "model_option")
"""Flags that describe a --model (not a checkpoint, which records all of it)."""


def normalize_flag(text: str | None) -> Any:
    """``--normalize``: None/none, dataset, or ``MEAN[,...]:STD[,...]`` -> the ``normalize`` of a model spec."""
    if text is None or text == "none":
        return None
    if text == "dataset":
        return "dataset"
    mean, sep, std = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return {"mean": [float(v) for v in mean.split(",")], "std": [float(v) for v in std.split(",")]}
    except ValueError:
        raise AdvlabError(f"--normalize: expected none, dataset or MEAN[,...]:STD[,...] (e.g. "
                          f"0.4914,0.4822,0.4465:0.2471,0.2435,0.2616), got {text!r}") from None


def model_options(items: list[str]) -> dict[str, Any]:
    """``--model-option KEY=VALUE`` flags as keyword arguments (values read as YAML)."""
    import yaml

    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise AdvlabError(f"--model-option: expected KEY=VALUE with a Python name as KEY, got {item!r}")
        try:
            options[key.strip()] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            options[key.strip()] = raw
    return options


def model_from_flags(args: argparse.Namespace, device) -> tuple[Any, dict[str, Any], str, float, str]:
    """The --model as its flags describe it, with its --weights loaded, in eval mode: ``(model, meta, dataset,
    eps, norm)``. AdvlabError naming the flag for what is missing or wrong."""
    if args.dataset is None or args.eps is None:
        raise AdvlabError("--model evaluates a model advlab did not train: give --dataset and --eps (e.g. --dataset "
                          "cifar10 --eps 8/255)")
    norm = get_norm(args.norm or "linf").name
    try:
        eps = check_eps(parse_eps(args.eps), norm)
    except AdvlabError as exc:
        raise AdvlabError(f"--eps: {exc}") from None
    info = data.info(args.dataset)
    spec: dict[str, Any] = {"name": args.model, "num_classes": info.num_classes, "in_channels": info.in_channels,
                            **model_options(args.model_option)}
    normalize = normalize_flag(args.normalize)
    if normalize == "dataset":
        normalize = {"mean": list(info.mean), "std": list(info.std)}
    if normalize is not None:
        spec["normalize"] = normalize
    if args.output is not None:
        spec["output"] = int(args.output) if args.output.lstrip("-").isdigit() else args.output
    found = model_source(args.model)
    if args.weights is None and (found is None or found[0].random_weights):
        raise AdvlabError(f"--model {args.model} starts from random weights: pass --weights FILE")
    kwargs = dict(spec)
    try:
        model = create_model(kwargs.pop("name"), **kwargs)
    except AdvlabError as exc:
        raise AdvlabError(f"--model {args.model}: {exc}") from None
    weights = None
    if args.weights is not None:
        state = read_weights(args.weights)
        report = load_weights(bare_network(model), state, strict=True, source=f"--weights {args.weights}")
        weights = {"file": str(args.weights), "tensors": report["loaded"],
                   "prefixes_removed": report["prefixes_removed"]}
    meta = {"model_spec": spec, "weights": weights}
    return model.to(device).eval(), meta, info.name, eps, norm


def clean_fraction(model, images, labels, batch_size: int, device) -> float:
    """The fraction of the points the model classifies correctly (eval mode, no gradient): what AutoAttack
    attacks, for the estimate."""
    correct = 0
    with eval_mode(model):
        for s in range(0, len(labels), batch_size):
            x = images[s:s + batch_size].to(device)
            x = x.float().div(255) if x.dtype == torch.uint8 else x
            correct += int((predict(model, x).cpu() == labels[s:s + batch_size]).sum())
    return correct / max(len(labels), 1)
