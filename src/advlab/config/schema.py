"""The training configuration's schema: a tree of dataclasses, one per section, with defaults and ranges.

The four recipe parts (``labels``, ``perturbation``, ``weighting``, ``objective``) are :class:`PartConfig`
values: a ``name`` from that part's registry plus the options that part declares (checked by
``advlab.recipes``). Names chosen from a registry are checked by ``advlab.engine.config_checks``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError
from ..options import option

CONFIG_VERSION = 2
"""The config format this release writes (``version`` in every ``config.yaml``). Format 1 (no ``version``) is
read with its renamed keys and units converted, each with a deprecation line (``advlab.config.renamed``)."""


PART_KINDS = ("labels", "perturbation", "weighting", "objective")
"""The part kinds of a recipe, in the order a step first runs them; each is a config section."""


@dataclass
class LabelNoiseConfig:
    kind: str = "symmetric"  # advlab.data.NOISE_KINDS
    rate: float = option(0.0, low=0, high=1)  # fraction of the training labels flipped; 0 = none
    seed: int = 0


@dataclass
class ImbalanceConfig:
    ratio: float = option(1.0, low=1)  # n_max / n_min of the long-tailed profile; 1 = balanced
    class_order: Literal["fixed", "shuffled"] = "fixed"  # which class gets which count: by index, or shuffled
    seed: int = 0


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"  # advlab.data.DATASETS
    train_size: int | None = option(None, low=1)  # first N training images, class-balanced; None = all
    crop_padding: int | None = option(None, low=0)  # None = the dataset's default
    flip: bool | None = None  # None = the dataset's default (off for digits)
    root: str | None = None  # where the files are; for folder: the folder, for tensors: the training file
    meta_size: int = option(0, low=0)  # clean, class-balanced meta split carved before noise and imbalance
    label_noise: LabelNoiseConfig = field(default_factory=LabelNoiseConfig)
    imbalance: ImbalanceConfig = field(default_factory=ImbalanceConfig)
    image_size: int | None = option(None, low=8)  # side every image is brought to (resize, centre crop); None = the files'
    augment: str = "auto"  # advlab.data.AUGMENTATIONS: crop, resized-crop; auto = the dataset's
    unlabeled: bool = False  # append the dataset's unlabeled images (label-free recipes: simclr, ssat-instance)
    loader: str = "auto"  # advlab.data.LOADERS: memory, stream; auto = memory when the decoded split fits memory_gib
    workers: int | None = option(None, low=0)  # processes decoding images; None = the CPUs, at most 8
    memory_gib: float | None = option(None, low=0)  # the in-memory budget of loader auto; None = a quarter of the device's
    val_per_class: int | None = option(None, low=0)  # validation images per class; None = the dataset's
    test_file: str | None = None  # tensors: the test file (None: a test split is carved from data.root)
    test_fraction: float = option(0.1, low=0, high=1, low_open=True, high_open=True)  # share of each class carved as the test split


@dataclass
class ModelConfig:
    name: str = "small-cnn"  # advlab.models.list_models(), or a model source: timm:<name>, torchvision:<name>, <module>:<factory>
    activation: str = "relu"  # advlab.models.list_activations() (advlab's own architectures only)
    options: dict[str, Any] = field(default_factory=dict)  # extra arguments of the model, e.g. dropout, depth, timm's drop_path_rate
    normalize: Any = "none"  # input normalisation inside the model: none, dataset (the dataset's mean and std), or {mean: [...], std: [...]}
    output: Any = None  # the key (str) or index (int) of the logits in a model's dict or tuple output; None: a tensor
    head: str = "linear"  # advlab.models.HEADS: linear (logits) or projection (encoder + projection head, self-supervised)
    projection_dim: int = option(128, low=1)  # width of the projection head's output (head: projection)
    freeze: str = "none"  # advlab.models.FREEZE: none, or encoder (only the last linear layer trains: linear evaluation)


@dataclass
class KNNConfig:
    """The k-nearest-neighbour classifier over a model's representation (``advlab.models.KNNClassifier``):
    its bank is the training split's features; evaluation and validation use it when
    ``evaluation.classifier`` says so."""

    k: int = option(75, low=1)  # neighbours (the paper's DkNN: 75)
    metric: str = "cosine"  # advlab.models.KNN_METRICS
    vote: str = "majority"  # advlab.models.KNN_VOTES: what predicts; gradients always come from the soft vote
    temperature: float = option(0.1, low=0, low_open=True)  # of the soft vote, exp(similarity / temperature)


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # advlab.engine.optimizers.OPTIMIZERS
    lr: float = option(0.01, low=0, low_open=True)
    momentum: float = option(0.9, low=0, high=1)
    weight_decay: float = option(5e-4, low=0)
    nesterov: bool = False


@dataclass
class ScheduleConfig:
    name: str = "piecewise"  # advlab.engine.schedule.SCHEDULES
    milestones: list[float] = option(low=0, default_factory=lambda: [0.5, 0.75])  # fraction of the run if < 1, else epoch
    gamma: float = option(0.1, low=0)
    peak: float = option(0.4, low=0, high=1, low_open=True)  # one-cycle: fraction of training at the peak rate


@dataclass
class ValidationConfig:
    n: int = option(1000, low=1)  # points of the validation split used each epoch
    attack: str = "pgd20"  # an evaluation attack (advlab.evaluation.EVAL_ATTACKS): best is chosen by what is reported
    batch_size: int = option(500, low=1)


@dataclass
class EvaluationConfig:
    n: int = option(1000, low=1)  # first N test images
    attacks: list[str] = field(default_factory=lambda: ["pgd20", "cw20", "autoattack"])
    autoattack_version: str = "standard"  # advlab.evaluation.AA_VERSIONS
    checkpoints: list[str] = field(default_factory=lambda: ["best", "last"])
    batch_size: int = option(500, low=1)
    sanity: bool = True  # the extra sanity checks (large-eps, more-steps) beside the final numbers
    classifier: str = "auto"  # advlab.evaluation.CLASSIFIERS: linear (the model's own head, its logits), knn, or auto (knn for head: projection)


@dataclass
class InitConfig:
    """Warm start: ``init.from`` names a run directory (its best checkpoint), an advlab checkpoint file, or weights
    made elsewhere (a plain state dict ``.pt``/``.pth``, or ``.safetensors``), loaded before training without
    executing code (CAAT fine-tunes a warm model). The attribute is ``from_``."""

    from_: str | None = field(default=None, metadata={"key": "from"})
    part: Literal["model", "encoder"] = "model"  # model: all weights (same architecture); encoder: the encoder only (a linear head starts fresh)
    strict: bool = True  # every weight of the model from init.from, none left over; false: load the keys that fit (e.g. a new head) and say which did not


@dataclass
class TrainingConfig:
    """What the loop watches for besides the epochs (``advlab.engine.collapse``: catastrophic overfitting)."""

    stop_on_collapse: bool = False  # stop once validation robustness collapses (on in the single-step presets)
    collapse_ratio: float = option(0.5, low=0, high=1, low_open=True)  # collapsed: below this x the best so far


@dataclass
class LoggingConfig:
    tensorboard: bool = False  # also write each epoch's metrics as TensorBoard scalars to <run>/tensorboard


DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
"""The units of a duration in ``checkpoint.every``: seconds, minutes, hours."""


def checkpoint_interval(every: Any) -> tuple[str, float] | None:
    """``checkpoint.every`` read: ``("steps", n)`` for a number of training steps (``500``), ``("seconds", s)``
    for a duration (``"90s"``, ``"30m"``, ``"1.5h"``), None for off (``null``, ``false``, YAML's ``off``).

    Raises:
        ConfigError: naming ``checkpoint.every``, for anything else, fewer than 1 step or under 1 second.
    """
    if every is None or every is False:
        return None
    if isinstance(every, str) and every.strip().isdigit():
        every = int(every.strip())
    if isinstance(every, int) and not isinstance(every, bool):
        if every < 1:
            raise ConfigError(f"checkpoint.every: a number of steps must be >= 1, got {every}")
        return ("steps", float(every))
    text = every.strip().lower() if isinstance(every, str) else ""
    if text in ("off", "none"):
        return None
    unit = DURATION_UNITS.get(text[-1:])
    try:
        amount = float(text[:-1]) if unit else math.nan
    except ValueError:
        amount = math.nan
    if not math.isfinite(amount):
        raise ConfigError(f"checkpoint.every: expected a number of steps (500), a duration with a unit of "
                          f"{', '.join(DURATION_UNITS)} (90s, 30m, 2h) or off, got {every!r}")
    if amount * unit < 1:
        raise ConfigError(f"checkpoint.every: a duration must be >= 1s, got {every!r}")
    return ("seconds", amount * unit)


@dataclass
class CheckpointConfig:
    """Checkpoints in the middle of an epoch (``mid-epoch.pt``), beside the one written at each epoch's end.

    ``every``: a number of training steps (``500``), a duration (``90s``, ``30m``, ``2h``: since the last
    checkpoint), or off (``null``). The default, 30 minutes, writes none in an epoch shorter than that (the clock
    restarts at each epoch's checkpoint), so short runs write what they always did, and a run killed in a long
    epoch (ImageNet: hours) loses at most 30 minutes, for one checkpoint write per 30 minutes (a ResNet-50 with
    SGD's momentum is 204 MB: a few seconds to a local disk, under 0.3% of the time). A checkpoint is also
    written when SIGINT or SIGTERM stops a run.
    """

    every: int | str | bool | None = "30m"  # steps (500), a duration (90s, 30m, 2h) or off; see checkpoint_interval

    def __post_init__(self) -> None:
        interval = checkpoint_interval(self.every)  # ConfigError naming checkpoint.every
        if interval is None:
            self.every = None  # one spelling each in config.yaml: null, 500, "30m"
        elif interval[0] == "steps":
            self.every = int(interval[1])


@dataclass
class DistributedConfig:
    """Only read under torchrun with several processes (``advlab.distributed``); one process ignores it."""

    backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto: nccl on CUDA, gloo on the CPU
    sync_batchnorm: bool = False  # batch norm with statistics over the global batch (CUDA only); attacks in eval mode stay local
    timeout_s: float = option(600.0, low=1)  # a collective waiting longer for another rank fails the job


@dataclass
class PartConfig:
    """One recipe part: a registered name plus that part's options (checked by ``advlab.recipes``)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def _part(name: str) -> Any:
    return field(default_factory=lambda: PartConfig(name))


@dataclass
class TrainConfig:
    version: int = CONFIG_VERSION  # the config format (CONFIG_VERSION); older formats are converted when read
    preset: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    eps: float = option(0.1, low=0, low_open=True)  # pixel units; linf eps must also be <= 1
    norm: str = "linf"  # advlab.attacks.NORMS
    epochs: int = option(10, low=1)
    batch_size: int = option(128, low=1)
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # advlab.recipes.PRECISIONS, or auto (advlab.engine.fast_defaults)
    attack_precision: str = "same"  # advlab.recipes.ATTACK_PRECISIONS: the attack's inside a training step
    compile: str = "none"  # advlab.engine.acceleration.COMPILE_MODES: torch.compile of the training step's model
    channels_last: bool | str = False  # the step's model and inputs channels-last; auto: advlab.engine.fast_defaults
    init: InitConfig = field(default_factory=InitConfig)
    knn: KNNConfig = field(default_factory=KNNConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    labels: PartConfig = _part("hard")
    perturbation: PartConfig = _part("pgd")
    weighting: PartConfig = _part("uniform")
    objective: PartConfig = _part("ce")
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def recipe_spec(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """``{kind: (part name, options)}`` for each of PART_KINDS: what ``advlab.recipes.create_recipe`` takes."""
        return {kind: (getattr(self, kind).name, getattr(self, kind).options) for kind in PART_KINDS}

    def model_spec(self, num_classes: int, in_channels: int,
                   dataset_stats: tuple[Any, Any] | None = None) -> dict[str, Any]:
        """The model this config builds for data of ``num_classes`` classes and ``in_channels`` channels, as
        ``advlab.models.create_model(spec.pop("name"), **spec)`` takes it and checkpoints record it.
        ``dataset_stats``: the dataset's ``(mean, std)``, for ``model.normalize: dataset``; the spec holds the
        numbers (``normalize: {mean, std}``), so the model is rebuilt without the dataset's record. A model from a
        source (``<source>:<name>``) takes no advlab activation."""
        spec: dict[str, Any] = {"name": self.model.name, "num_classes": num_classes, "in_channels": in_channels}
        if ":" not in self.model.name:
            spec["activation"] = self.model.activation
        spec.update(self.model.options)
        normalize = self.model.normalize
        if normalize == "dataset":
            if dataset_stats is None:
                raise ConfigError("model.normalize: dataset needs the dataset's mean and std")
            normalize = {"mean": dataset_stats[0], "std": dataset_stats[1]}
        if isinstance(normalize, dict):  # default values stay out, so older checkpoints keep their spec
            spec["normalize"] = {k: [float(v) for v in (normalize[k] if isinstance(normalize[k], (list, tuple))
                                                        else [normalize[k]])] for k in ("mean", "std")}
        if self.model.output is not None:
            spec["output"] = self.model.output
        if self.model.head != "linear":  # default values stay out, so older checkpoints keep their spec
            spec.update(head=self.model.head, projection_dim=self.model.projection_dim)
        if self.model.freeze != "none":
            spec["freeze"] = self.model.freeze
        return spec


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, PartConfig):
        return {"name": obj.name, **_to_plain(obj.options)}
    if dataclasses.is_dataclass(obj):
        return {f.metadata.get("key", f.name): _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj
