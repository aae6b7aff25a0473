"""Which classifier an evaluation attacks: the model's own logits, or k nearest neighbours over its features.

A run with a projection head (self-supervised) has no logits to classify with; a supervised model can be
classified either way (its own linear head, or kNN over its penultimate features, as Chen et al. 2020 compare).
``evaluation.classifier`` (config) and ``advlab eval --classifier`` choose among :data:`CLASSIFIERS`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..config import KNNConfig
from ..errors import AdvlabError
from ..models import ContrastiveModel, KNNClassifier, feature_extractor, knn_classifier

CLASSIFIERS = ("auto", "linear", "knn")
"""``linear``: the model's own linear head (its logits; ``model.head: linear``); ``knn``:
:class:`advlab.models.KNNClassifier` over its representation with the training split as the bank; ``auto``: knn
for a model with a projection head, linear otherwise."""


def classifier_kind(choice: str, model: nn.Module) -> str:
    """``linear`` or ``knn`` for ``choice`` (:data:`CLASSIFIERS`) and ``model``; AdvlabError for an unknown
    choice or linear of a model without a linear head. A model that is already a KNNClassifier is ``knn``
    (linear refused)."""
    if choice not in CLASSIFIERS:
        raise AdvlabError(f"classifier must be one of {', '.join(CLASSIFIERS)}, got {choice!r}")
    if isinstance(model, KNNClassifier):
        if choice == "linear":
            raise AdvlabError("classifier linear: this model is a kNN classifier already")
        return "knn"
    has_head = not isinstance(model, ContrastiveModel)
    if choice == "auto":
        return "linear" if has_head else "knn"
    if choice == "linear" and not has_head:
        raise AdvlabError("classifier linear: this model has a projection head, not a linear head; use knn "
                          "(or train a linear head on it with advlab probe)")
    return choice


def as_classifier(model: nn.Module, choice: str, train_images: torch.Tensor | None, train_labels: torch.Tensor | None,
                  num_classes: int, knn: dict[str, Any] | None = None, *, batch_size: int = 500,
                  device: torch.device | str | None = None) -> nn.Module:
    """The module to evaluate: ``model`` itself (linear), or a :class:`KNNClassifier` over its representation
    whose bank is the features of (train_images (N, C, H, W) uint8 or [0, 1] floats, train_labels (N,)),
    built once in eval mode. ``knn``: k, metric, vote, temperature (``KNNConfig``); k above N is cut to N."""
    if classifier_kind(choice, model) == "linear" or isinstance(model, KNNClassifier):
        return model
    if train_images is None or train_labels is None:
        raise AdvlabError("a kNN classifier needs the training split for its bank")
    options = dict(knn or {})
    options = {**dataclasses.asdict(KNNConfig()), **options}  # the config's defaults, one source
    options["k"] = min(int(options["k"]), len(train_labels))
    return knn_classifier(feature_extractor(model), train_images, train_labels, num_classes, batch_size=batch_size,
                          device=device, **options)


def is_knn(model: nn.Module) -> bool:
    """Whether ``model`` is a kNN classifier (for reports and attacks that need its bank)."""
    return isinstance(model, KNNClassifier)


def describe_classifier(model: nn.Module) -> dict[str, Any]:
    """What a reported number was measured on, JSON-ready: ``{"kind": "linear"}``, or the kNN's settings and
    bank size with what predicts (the hard vote) and what the attacks' gradients come from (the soft vote)."""
    if not isinstance(model, KNNClassifier):
        return {"kind": "linear"}
    return {"kind": "knn", "k": model.k, "metric": model.metric, "vote": model.vote,
            "temperature": model.temperature, "bank": int(len(model.bank_labels)),
            "prediction": f"hard vote ({model.vote})", "gradient": "soft vote (exp(similarity / temperature))"}
