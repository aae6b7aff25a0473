"""Typed training configuration: YAML presets in, dotted ``key=value`` overrides, YAML out.

A config is a tree of dataclasses. The four recipe parts (``labels``, ``perturbation``, ``weighting``,
``objective``) are :class:`PartConfig` values: a ``name`` from that part's registry plus the options that
part declares. Every key and value is checked at once; a wrong one raises :class:`ConfigError` naming
the key and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .options import check_ranges, option

PRESET_DIR = Path(__file__).parent / "configs"


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
    name: str = "fashion-mnist"  # advlab.data.DATASETS
    train_size: int | None = option(None, low=1)  # first N training images, class-balanced; None = all
    crop_padding: int | None = option(None, low=0)  # None = the dataset's default
    flip: bool | None = None  # None = the dataset's default (off for digits)
    root: str | None = None
    meta_size: int = option(0, low=0)  # clean, class-balanced meta split carved before noise and imbalance
    label_noise: LabelNoiseConfig = field(default_factory=LabelNoiseConfig)
    imbalance: ImbalanceConfig = field(default_factory=ImbalanceConfig)


@dataclass
class ModelConfig:
    name: str = "small-cnn"  # advlab.models.list_models()
    activation: str = "relu"  # advlab.models.list_activations()
    options: dict[str, Any] = field(default_factory=dict)  # extra arguments of the model, e.g. dropout, depth
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
    classifier: str = "auto"  # advlab.evaluation.CLASSIFIERS: softmax (the model's logits), knn, or auto (knn for head: projection)


@dataclass
class InitConfig:
    """Warm start: ``init.from`` names a run directory (its best checkpoint) or a checkpoint file whose model
    weights are loaded before training (CAAT fine-tunes a warm model). The attribute is ``from_``."""

    from_: str | None = field(default=None, metadata={"key": "from"})
    part: Literal["model", "encoder"] = "model"  # model: all weights (same architecture); encoder: the encoder only (a linear head starts fresh)


@dataclass
class LoggingConfig:
    tensorboard: bool = False  # also write each epoch's metrics as TensorBoard scalars to <run>/tensorboard


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
    precision: str = "fp32"  # advlab.recipes.PRECISIONS
    attack_precision: str = "same"  # advlab.recipes.ATTACK_PRECISIONS: the attack's inside a training step
    compile: str = "none"  # advlab.engine.acceleration.COMPILE_MODES: torch.compile of the training step's model
    channels_last: bool = False  # the training step's model and inputs in the channels-last memory format
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
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def parts(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """``{kind: (option name, options)}`` for each of PART_KINDS: what ``advlab.recipes.build_recipe`` takes."""
        return {kind: (getattr(self, kind).name, getattr(self, kind).options) for kind in PART_KINDS}

    def model_spec(self, num_classes: int, in_channels: int) -> dict[str, Any]:
        """The model this config builds for data of ``num_classes`` classes and ``in_channels`` channels, as
        ``advlab.models.create(spec.pop("name"), **spec)`` takes it and checkpoints record it."""
        spec = {"name": self.model.name, "num_classes": num_classes, "in_channels": in_channels,
                "activation": self.model.activation, **self.model.options}
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


# --------------------------------------------------------------------------------------------------
# building a config from a plain dict


def _check_value(key: str, value: Any, hint: Any) -> Any:
    """Coerce ``value`` to the annotated type ``hint`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: invalid value {value!r}; allowed: {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(key, value, inner[0])
    if origin is list:
        if isinstance(value, (str, int, float)) and args and args[0] is str and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_value(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping (key: value), got {value!r}")
        return value
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def build_dataclass(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """``cls(**data)`` with every key, type and range checked; ConfigError naming ``prefix.key`` otherwise.

    Nested dataclass fields are built from nested mappings; :class:`PartConfig` fields keep their options
    as given (the recipe parts check them).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    attribute = {f.metadata.get("key", f.name): f.name for f in dataclasses.fields(cls)}  # config key -> attribute
    names = list(attribute)
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{prefix}." if prefix else ""
        allowed = (f"allowed keys{' in ' + prefix if prefix else ''}: {', '.join(map(str, names))}" if names
                   else f"{prefix or 'this section'} takes no keys")
        raise ConfigError(f"unknown key {where}{unknown[0]}; {allowed}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        attr = attribute[name]
        hint = hints[attr]
        if hint is PartConfig:
            kwargs[attr] = _build_part(value, key)
        elif dataclasses.is_dataclass(hint):
            kwargs[attr] = build_dataclass(hint, value, key)
        else:
            kwargs[attr] = _check_value(key, value, hint)
    built = cls(**kwargs)
    check_ranges(built, prefix)
    return built


def _build_part(value: Any, key: str) -> PartConfig:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise ConfigError(f"{key}: expected a mapping with a 'name', got {value!r}")
    if not isinstance(value["name"], str):
        raise ConfigError(f"{key}.name: expected a string, got {value['name']!r}")
    return PartConfig(value["name"], {k: v for k, v in value.items() if k != "name"})


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a plain (possibly partial) mapping, keys, types and ranges checked.

    Names chosen from registries (dataset, model, parts, attacks, ...) and each part's options are checked
    by ``advlab.engine.validate.validate_config``, which every run calls before it touches the disk.
    """
    return build_dataclass(TrainConfig, data or {}, "")


# --------------------------------------------------------------------------------------------------
# presets, overrides, YAML


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (line and column, 1-based)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping of a YAML file; ConfigError naming the file for an unreadable file, text that is not
    UTF-8 YAML, a file with no settings (empty, only comments, or ``{}``: almost certainly a mistake, which
    would otherwise run every default) or a top level that is not a mapping."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}); expected a YAML config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if data is None or data == {}:
        raise ConfigError(f"{path}: no settings in it (empty, only comments or {{}}); a config sets at least one key, "
                          "e.g. inherits: pgd-at")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``. A part whose ``name`` changes starts afresh."""
    out = dict(base)
    for key, value in update.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            if key in PART_KINDS and "name" in value and value["name"] != old.get("name"):
                out[key] = dict(value)
            else:
                out[key] = merge(old, value)
        else:
            out[key] = value
    return out


def preset_dict(name_or_path: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The plain mapping of a preset (by name) or YAML file, with ``inherits`` resolved."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        if path.suffix in (".yaml", ".yml"):
            raise ConfigError(f"no such config file: {path}; give an existing YAML file or a preset name "
                              f"({', '.join(preset_names())})")
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown preset {name_or_path!r}; allowed: {', '.join(preset_names())}")
    if str(path) in _seen:
        raise ConfigError(f"preset {path} inherits from itself: {' -> '.join(_seen + (str(path),))}")
    own = _read_yaml(path)
    parent = own.pop("inherits", None)
    if parent is not None and not isinstance(parent, str):
        raise ConfigError(f"{path}: inherits: expected a preset name or YAML path, got {parent!r}")
    own.setdefault("preset", path.stem)
    data = merge(preset_dict(parent, _seen + (str(path),)), own) if parent else own
    return data


def parse_override(item: str) -> dict[str, Any]:
    """``"a.b=3"`` -> ``{"a": {"b": 3}}``; the value is read as YAML (numbers, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    if not all(p.strip() for p in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key; write dotted.key=value, e.g. optimizer.lr=0.05")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(preset: str | None = None, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """A preset (name or YAML path) with overrides applied, validated."""
    data = preset_dict(preset) if preset else {}
    if isinstance(overrides, dict):
        data = merge(data, overrides)
    else:
        for item in overrides or []:
            data = merge(data, parse_override(item))
    return from_dict(data)


def dump_config(config: TrainConfig) -> str:
    """The config as YAML text (what ``config.yaml`` holds)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write ``dump_config(config)`` to ``path`` (a run writes it atomically through ``advlab.runs``)."""
    Path(path).write_text(dump_config(config))


def read_config(path: str | Path) -> TrainConfig:
    return from_dict(_read_yaml(Path(path)))
