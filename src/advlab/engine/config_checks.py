"""Checks of a whole training config that need no data: choices, ranges, part options, cross-field rules.

A run calls :func:`check_config`, then builds its data, model and recipe in memory (which checks that the
dataset is there, the model fits its images and the parts fit together), and only then writes anything.
"""
from __future__ import annotations

from ..config import PART_KINDS, TrainConfig, from_dict
from ..data import DATASETS, info
from ..data.training_split import check_scenarios
from ..devices import pick_device
from ..errors import AdvlabError, ConfigError
from ..evaluation import knn_attacks
from ..evaluation.threat import check_eps
from ..models import Normalize, normalize_stats
from ..models.external import check_output_key
from ..recipes import part_class, part_options
from .choices import check_choices


def check_config(config: TrainConfig) -> None:
    """ConfigError naming the key for the first value a run with ``config`` cannot use.

    Keys, types and ranges are checked when the config is built (``advlab.config``), and again here for a
    TrainConfig built or edited in code; then every value
    chosen from a registry, each part's options (names, types, ranges), eps for the norm, the device and
    the precision it allows, and the data scenarios (label noise, imbalance, meta split) for the dataset.
    """
    from_dict(config.to_dict())  # keys, types and ranges again: a TrainConfig built or edited in code
    check_choices(config)
    for kind in PART_KINDS:
        section = getattr(config, kind)
        part_options(kind, section.name, section.options)
    _check_head(config)
    _check_model(config)
    try:
        check_eps(config.eps, config.norm)
    except AdvlabError as exc:
        raise ConfigError(f"eps: {exc}") from None
    if isinstance(config.channels_last, str) and config.channels_last != "auto":
        raise ConfigError(f"channels_last: expected true, false or auto, got {config.channels_last!r}")
    device = pick_device(config.device)
    if config.precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision: fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if config.attack_precision == "fp16" and device.type != "cuda":
        raise ConfigError("attack_precision: fp16 needs a CUDA device; use same, bf16 or fp32 on CPU")
    e = config.evaluation
    knn = e.classifier == "knn" or (e.classifier == "auto" and config.model.head == "projection")
    for key, names in (("validation.attack", [config.validation.attack]), ("evaluation.attacks", e.attacks)):
        needs_knn = [name for name in names if name in knn_attacks()]
        if needs_knn and not knn:
            raise ConfigError(f"{key}: {needs_knn[0]} attacks a kNN classifier, but this run is evaluated with its "
                              "linear head; set evaluation.classifier: knn")
    d = config.data
    try:
        check_scenarios(info(d.dataset).num_classes, d.meta_size, d.label_noise, d.imbalance)
    except AdvlabError as exc:
        raise ConfigError(f"data: {exc}") from None
    _check_data(config)


def _check_data(config: TrainConfig) -> None:
    """ConfigError for data settings that cannot go together: unlabeled images without an unlabeled part or with
    a recipe that reads labels, the memory loader with the resized-crop augmentation, a source without its root."""
    d, record = config.data, info(config.data.dataset)
    if not record.search and not d.root:
        raise ConfigError(f"data.root: dataset {d.dataset!r} reads your files; set data.root ({record.hint})")
    if d.test_file and d.dataset != "tensors":
        raise ConfigError(f"data.test_file: the test file of the tensors source; dataset {d.dataset!r} has its own")
    if d.unlabeled:
        if "unlabeled" not in record.parts:
            having = [n for n in DATASETS.names() if "unlabeled" in info(n).parts]
            raise ConfigError(f"data.unlabeled: dataset {d.dataset!r} has no unlabeled images (those with: "
                              f"{', '.join(having)})")
        for kind in PART_KINDS:
            name = getattr(config, kind).name
            if not part_class(kind, name).label_free:
                raise ConfigError(f"data.unlabeled: {kind}.name {name!r} reads the labels, which unlabeled images do "
                                  "not have; use a label-free recipe (preset simclr or ssat-instance) or set "
                                  "data.unlabeled: false")
    augment = record.augment if d.augment == "auto" else d.augment
    if d.loader == "memory" and augment == "resized-crop":
        raise ConfigError("data.loader: memory holds each image at its fixed view, but the resized-crop augmentation "
                          "crops the full-size file; use data.loader stream (or auto), or data.augment crop")


NORMALIZE_WORDS = ("none", "dataset")
"""The words ``model.normalize`` takes besides ``{mean: [...], std: [...]}``."""


def _check_model(config: TrainConfig) -> None:
    """ConfigError naming the key for a ``model.normalize`` or ``model.output`` the model cannot take, or an advlab
    activation asked of a model from a source (``<source>:<name>``), which has its own."""
    m = config.model
    if ":" in m.name and m.activation != "relu":
        raise ConfigError(f"model.activation: advlab's activations apply to its own architectures; {m.name} takes "
                          "its own as a model option (e.g. model.options.act_layer for timm)")
    if not (isinstance(m.normalize, str) and m.normalize in NORMALIZE_WORDS):
        if not isinstance(m.normalize, dict):
            raise ConfigError(f"model.normalize: expected {' or '.join(NORMALIZE_WORDS)} or {{mean: [...], std: "
                              f"[...]}}, got {m.normalize!r}")
        try:
            Normalize(*normalize_stats(m.normalize))
        except AdvlabError as exc:
            raise ConfigError(f"model.normalize: {exc}") from None
    try:
        check_output_key(m.output)
    except AdvlabError as exc:
        raise ConfigError(str(exc)) from None


def _check_head(config: TrainConfig) -> None:
    """ConfigError when the objective reads a representation (a contrastive objective) and the model ends in a
    classifier, or the objective reads logits and the model ends in a projection head."""
    name, head = config.objective.name, config.model.head
    wants = "projection" if part_class("objective", name).representation else "linear"
    if head != wants:
        reads = "a representation (a projection head's output)" if wants == "projection" else "class logits"
        raise ConfigError(f"model.head: objective {name!r} reads {reads}, which model.head {head!r} does not give; "
                          f"set model.head: {wants}")
