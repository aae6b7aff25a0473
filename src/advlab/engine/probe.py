"""Linear evaluation of a pre-trained run: the three protocols of the robust self-supervised benchmark.

``probe(run, mode)`` trains a new run that starts from the encoder of ``run``'s best checkpoint (a
self-supervised run with a projection head, or a supervised classifier: its features before the last linear
layer) with a fresh linear head, by one of the modes of :data:`PROBE_MODES`:

- ``slf``: standard linear fine-tuning (preset ``standard``; the encoder frozen, batch norm in eval mode);
- ``alf``: adversarial linear fine-tuning (preset ``pgd-at``; PGD-10 against the frozen encoder + head);
- ``aff``: adversarial full fine-tuning with TRADES (preset ``trades``; every weight trains).

The modes and their defaults follow GodXuxilie/RobustSSL_Benchmark (``finetuning_eval.py`` and ``utils.py``:
``get_model`` freezes all but ``fc`` for SLF/ALF, ``train`` keeps the model in eval mode for them, AFF is
TRADES with beta 6). The probe is an ordinary advlab run (config.yaml, checkpoints, metrics, summary.json
evaluated with the linear head), resumable with ``advlab train --resume``; its config records the source in
``init.from`` (an absolute path, so a resume from another folder finds it) with ``init.part: encoder``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import TrainConfig, from_dict, merge, parse_override, preset_dict
from ..errors import AdvlabError, ConfigError
from ..models import ContrastiveModel
from ..models.representation import backbone, final_linear
from ..registry import Registry
from ..runs import RunDir, load_model
from .train import train
from .config_checks import check_config

LINEAR_DEFAULTS: tuple[str, ...] = (
    "epochs=25", "batch_size=512", "optimizer.name=sgd", "optimizer.lr=0.01", "optimizer.momentum=0.9",
    "optimizer.weight_decay=2.0e-4", "schedule.name=piecewise", "schedule.milestones=[0.4,0.8]",
    "schedule.gamma=0.1",
)
"""The linear head's training on frozen features (SLF, ALF), as RobustSSL_Benchmark's ``finetuning_eval.py``
(argparse defaults: 25 epochs, batch 512, SGD momentum 0.9, weight decay 2e-4, lr decayed x0.1 at epochs 10
and 20, here 0.4 and 0.8 of the run so ``--epochs`` keeps the shape) and ``utils.setup_hyperparameter``
(lr 0.01 for CIFAR-10)."""

LINEAR_SOURCE = ("GodXuxilie/RobustSSL_Benchmark finetuning_eval.py (epochs 25, batch 512, SGD momentum 0.9, "
                 "weight decay 2e-4, lr x0.1 at epochs 10 and 20) and utils.py setup_hyperparameter "
                 "(lr 0.01 on CIFAR-10), get_model (all but fc frozen) and train (model.eval() for SLF/ALF)")


@dataclass(frozen=True)
class ProbeMode:
    """One linear-evaluation protocol: a training preset, what it freezes, and its defaults.

    ``defaults``: ``key=value`` overrides applied on top of ``preset`` (before the source run's data, model and
    threat model, and before the user's overrides); ``source``: where the mode and its defaults come from."""

    name: str
    title: str  # one line for the CLI's help
    preset: str  # advlab preset the training recipe comes from
    freeze: str  # model.freeze (advlab.models.FREEZE)
    defaults: tuple[str, ...]
    source: str

    def base(self) -> dict[str, Any]:
        """The plain config mapping of the mode before any run is read: its preset with its defaults."""
        data = preset_dict(self.preset)
        for item in self.defaults:
            data = merge(data, parse_override(item))
        return data


PROBE_MODES: Registry[ProbeMode] = Registry("probe mode")
"""The linear-evaluation protocols by name; ``advlab probe --mode`` and its help read this table."""


def register_probe_mode(mode: ProbeMode, *, overwrite: bool = False) -> ProbeMode:
    """Add ``mode`` to :data:`PROBE_MODES` under ``mode.name``."""
    return PROBE_MODES.register(mode.name, mode, overwrite=overwrite)


register_probe_mode(ProbeMode(
    "slf", "standard linear fine-tuning: a linear head on the frozen encoder, clean images",
    "standard", "encoder", LINEAR_DEFAULTS, LINEAR_SOURCE))
register_probe_mode(ProbeMode(
    "alf", "adversarial linear fine-tuning: a linear head on the frozen encoder, PGD-10 images",
    "pgd-at", "encoder", LINEAR_DEFAULTS, LINEAR_SOURCE))
register_probe_mode(ProbeMode(
    "aff", "adversarial full fine-tuning with TRADES (beta 6): encoder and a new linear head",
    "trades", "none", (),
    "RobustSSL_Benchmark utils.py trades_loss_dual (beta 6, KL-PGD-10); optimiser and epochs: advlab's trades preset"))

RUN_DATA_KEYS = ("dataset", "root", "train_size", "meta_size", "label_noise", "imbalance", "image_size",
                 "val_per_class", "test_file", "test_fraction", "loader", "workers", "memory_gib")
"""The ``data`` keys a probe takes from its source run (the same dataset, split, scenarios, image size and loader);
not ``unlabeled``: a linear probe trains on the labelled training images only."""
RUN_MODEL_KEYS = ("name", "activation", "options", "normalize", "output")
"""The ``model`` keys a probe takes from its source run (the same backbone); the head is a new linear one."""


def default_out(run: str | Path, mode: str) -> Path:
    """Where a probe of ``run`` by ``mode`` goes by default: ``<run>-probe-<mode>`` beside ``run``."""
    path = Path(run)
    if path.name in ("", ".", ".."):
        path = path.resolve()
    return path.with_name(f"{path.name}-probe-{mode}")


def _source(run: str | Path) -> tuple[RunDir, TrainConfig]:
    """The source run and its config; AdvlabError (one line) for a missing folder, a folder that is no run,
    a run without a best checkpoint, or a model that cannot take a linear head."""
    if not isinstance(run, (str, Path)):
        raise ConfigError(f"run must be a run directory path (str or Path), got {run!r}")
    path = Path(run)
    if not path.exists():
        raise AdvlabError(f"no such run directory: {path}")
    source = RunDir.open(path)  # AdvlabError unless it holds config.yaml
    if not source.has_checkpoint("best"):
        raise AdvlabError(f"{path} has no best checkpoint (best.pt) yet; train it first (or finish it with "
                          f"`advlab train --resume {path}`)")
    config = source.read_config()
    model, ckpt = load_model(path, "best")
    if not isinstance(model, ContrastiveModel):  # a projection head was put on a stripped linear layer: fine
        try:
            final_linear(backbone(model))
        except AdvlabError:
            raise ConfigError(f"{path}: its model {ckpt['model_spec'].get('name')!r} cannot take a linear head: it "
                              "has no nn.Linear layer (a probe replaces a classifier's last nn.Linear)") from None
    return source, config


def probe_config(run: str | Path, mode: str, overrides: list[str] | None = None, *,
                 epochs: int | None = None) -> TrainConfig:
    """The config of the probe of ``run`` by ``mode`` (:data:`PROBE_MODES`), validated as a run's
    (``check_config``); nothing is written.

    Built as: the mode's preset and defaults; from ``run``'s config its data (dataset, root, train_size,
    meta_size, label_noise, imbalance), model (name, activation, options), eps, norm and seed; then
    ``model.head: linear``, the mode's ``model.freeze``, ``init.from: <run, absolute>``, ``init.part: encoder``,
    ``evaluation.classifier: linear``; then ``epochs`` and the user's ``overrides`` (``key=value``, as
    ``advlab train``), last, so they can change any of it. ConfigError / AdvlabError (one line) for a bad
    ``run`` (see :func:`probe`), an unknown mode, overrides that are not ``key=value`` strings or name an
    unknown key or a wrong value.
    """
    if not isinstance(mode, str):
        raise ConfigError(f"mode must be one of {', '.join(PROBE_MODES.names())}, got {mode!r}")
    spec = PROBE_MODES.get(mode)
    if overrides is not None and (not isinstance(overrides, (list, tuple))
                                  or not all(isinstance(o, str) for o in overrides)):
        raise ConfigError(f"overrides must be a list of 'key=value' strings, got {overrides!r}")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)):
        raise ConfigError(f"epochs must be a positive integer, got {epochs!r}")
    parsed = [parse_override(item) for item in overrides or []]  # a malformed override fails before the run is read
    source, run_config = _source(run)
    data = spec.base()
    plain = run_config.to_dict()
    data = merge(data, {
        "data": {k: plain["data"][k] for k in RUN_DATA_KEYS if k in plain["data"]},
        "model": {k: plain["model"][k] for k in RUN_MODEL_KEYS},
        "eps": plain["eps"], "norm": plain["norm"], "seed": plain["seed"],
    })
    data = merge(data, {
        "preset": f"probe-{spec.name}",
        "description": f"{spec.name.upper()} ({spec.title}) of {source.path}",
        "model": {"head": "linear", "freeze": spec.freeze},
        "init": {"from": str(source.path.resolve()), "part": "encoder"},
        "evaluation": {"classifier": "linear"},
    })
    if epochs is not None:
        data = merge(data, {"epochs": epochs})
    for item in parsed:
        data = merge(data, item)
    config = from_dict(data)
    check_config(config)
    return config


def probe(run: str | Path, mode: str, out: str | Path | None = None, overrides: list[str] | None = None, *,
          epochs: int | None = None, overwrite: bool = False, progress: bool = True,
          evaluate: bool = True) -> dict[str, Any]:
    """Linear evaluation of ``run`` by ``mode`` (``slf``, ``alf``, ``aff``: :data:`PROBE_MODES`); the summary.

    ``run``: a run directory with ``config.yaml`` and ``best.pt`` (self-supervised with a projection head, or
    supervised); its encoder's weights start the new model, whose linear head starts afresh. ``out``: the new
    run's directory (default :func:`default_out`: ``<run>-probe-<mode>`` beside ``run``). ``epochs`` and
    ``overrides`` (``key=value`` strings) change the config of :func:`probe_config`. The summary (also in
    ``<out>/summary.json``) evaluates best and last with the linear head; with ``evaluate=False`` it returns
    the training history instead, as :func:`advlab.train` does.

    Raises (one line, nothing written): AdvlabError for a missing ``run``, a folder that is not a run, a run
    without ``best.pt``; ConfigError for a model that cannot take a linear head, an unknown mode, bad
    overrides, an ``out`` that is not a path; AdvlabError for a non-empty ``out`` without ``overwrite``.
    """
    config = probe_config(run, mode, overrides, epochs=epochs)
    if out is not None and not isinstance(out, (str, Path)):
        raise ConfigError(f"out must be a folder path (str or Path), got {out!r}")
    return train(config, out if out is not None else default_out(run, mode), overwrite=overwrite,
                 progress=progress, evaluate=evaluate)
