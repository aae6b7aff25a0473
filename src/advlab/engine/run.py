"""Building a run: everything one training run needs, created and checked in memory, nothing written.

:func:`create_run` reads a config and returns a :class:`Run`: the processes, the data (training split, its
loader, the validation points), the model (with the wrapper the step calls), the optimiser and its schedule,
and the recipe. Everything a run can get wrong is found here, before a run directory is touched: config values
and part options, the dataset's files, the model on the data's shape, the parts fitting together, a compiler
that gets the gradients wrong.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .. import data as datasets
from .. import distributed
from ..config import TrainConfig
from ..data import DeviceLoader, StreamLoader, TrainingSplit
from ..devices import pick_device
from ..distributed import Collective
from ..errors import AdvlabError, ConfigError
from ..evaluation import as_classifier
from ..models import check_model_fits, create_model, registered_in
from ..recipes import Recipe, RecipeEnv, create_recipe
from ..runs import describe_report, load_warm_start
from .acceleration import as_step_input, check_compiled, step_model
from .config_checks import check_config
from .fast_defaults import resolve_fast_defaults
from .optimizers import create_optimizer
from .schedule import create_schedule, first_decay_epoch
from .tensorboard import EpochScalars


@dataclass
class RunData:
    """What a run trains and validates on.

    ``split``: the training split (uint8 images N x C x H x W, decoded or lazy; int64 labels, -1 for unlabeled
    images; the meta split; ``record``: what it is, as ``data.json`` holds it); ``loader``: its batches on the
    training device (this rank's shard under torchrun; in memory or streamed); ``val_images``/``val_labels``: the first ``validation.n`` points of the validation split
    (uint8, int64); ``num_classes``, ``in_channels``: of the dataset.
    """

    split: TrainingSplit
    loader: DeviceLoader | StreamLoader
    val_images: torch.Tensor
    val_labels: torch.Tensor
    num_classes: int
    in_channels: int


@dataclass
class Run:
    """One run's objects, built in memory by :func:`create_run`.

    ``model`` is the eager module that checkpoints save and validation and evaluation attack; ``step_model``
    is what the training step calls (``model`` itself, compiled, or wrapped by DistributedDataParallel under
    torchrun). ``rate(epoch + fraction)`` is the learning rate at that point of the run. ``compile_check``:
    the first batch's eager-vs-compiled comparison (``compile`` other than none), else None.
    """

    config: TrainConfig
    device: torch.device
    collective: Collective
    progress: bool
    data: RunData
    model: nn.Module
    step_model: nn.Module
    model_spec: dict[str, Any]
    compile_check: dict[str, float] | None
    optimizer: torch.optim.Optimizer
    rate: Callable[[float], float]
    scaler: torch.amp.GradScaler | None
    recipe: Recipe
    tensorboard: EpochScalars | None
    fast_defaults: str | None = None  # what precision / channels_last: auto chose and why, else None

    def classifier(self, model: nn.Module) -> nn.Module:
        """What validation and evaluation attack (``evaluation.classifier``): ``model``, or a kNN classifier over
        its representation with the training split as the bank (built now, from the model as it is)."""
        c = self.config
        images, labels = self.data.split.labelled()  # the kNN's bank: the labelled training images
        return as_classifier(model, c.evaluation.classifier, images, labels, self.data.num_classes,
                             dataclasses.asdict(c.knn), batch_size=c.validation.batch_size, device=self.device)


def create_run(config: TrainConfig, *, progress: bool = True, warm_start: bool = True) -> Run:
    """Check ``config`` and build its run in memory; writes nothing.

    Starts the process group under torchrun (``advlab.distributed``). ``warm_start``: load ``init.from``'s
    weights (not when resuming: the run's own ``last.pt`` holds them, and the source may be gone).

    Raises:
        ConfigError: a bad key, value, part option or misfit of parts; a model that does not fit the data.
        DataError: the dataset's files are missing or malformed.
        AdvlabError: a compiler whose gradients differ from eager mode's.
    """
    check_config(config)
    launch = distributed.launch_from_env()
    device = distributed.process_device(pick_device(config.device), launch)
    c, fast_defaults = resolve_fast_defaults(config, device)  # precision / channels_last: auto
    if launch.distributed:
        _check_distributed(c, device)
    collective = distributed.start(launch, device, c.distributed.backend, c.distributed.timeout_s)
    torch.manual_seed(c.seed)

    data = _create_data(c, device, collective)
    meta = datasets.info(c.data.dataset)
    model_spec = c.model_spec(data.num_classes, data.in_channels, (meta.mean, meta.std))
    origin = registered_in(c.model.name)
    if origin:  # a model registered with register_model outside advlab: another process imports this module
        model_spec["registered_in"] = origin
    model = _create_model(c, model_spec, data, device, warm_start, progress and collective.is_main)
    if collective.distributed and c.distributed.sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same state-dict keys
    stepped = step_model(model, c.compile, c.channels_last)
    if collective.distributed:  # broadcasts rank 0's parameters and buffers
        stepped = torch.nn.parallel.DistributedDataParallel(
            stepped, device_ids=[device.index] if device.type == "cuda" else None)
    compile_check = None
    if c.compile != "none":  # before anything is written: a compiler that gets the gradients wrong stops here
        n = min(c.batch_size, data.loader.num_items)  # a training batch's shape: compiled once, reused
        x0 = as_step_input(data.split.images[:n].to(device).float().div(255), c.channels_last)
        compile_check = check_compiled(model, stepped, x0, data.split.labels[:n].to(device))
    optimizer = create_optimizer(model.parameters(), c.optimizer)
    rate = create_schedule(c.schedule, c.optimizer.lr, c.epochs)
    scaler = torch.amp.GradScaler("cuda") if c.precision == "fp16" else None
    recipe = _create_recipe(c, data, model, optimizer, device, collective)
    tensorboard = EpochScalars() if c.logging.tensorboard else None  # checks the package
    return Run(config=c, device=device, collective=collective, progress=progress and collective.is_main, data=data,
               model=model, step_model=stepped, model_spec=model_spec, compile_check=compile_check,
               optimizer=optimizer, rate=rate, scaler=scaler, recipe=recipe, tensorboard=tensorboard,
               fast_defaults=fast_defaults)


def _create_data(c: TrainConfig, device: torch.device, collective: Collective) -> RunData:
    """The training split (``advlab.data.run_training_split``, which ``advlab eval --classifier knn`` rebuilds
    alike for its bank; decoded into memory or left to stream, by ``data.loader``), its loader (this rank's
    shard), and the validation points."""
    split = datasets.run_training_split(c.data, c.seed, device)
    loader = datasets.create_loader(split, c.data, c.batch_size, device, c.seed)
    if collective.distributed:
        loader.shard(collective.rank, collective.world_size)
    val = datasets.run_split(c.data, "val", c.validation.n)
    split.record["images"]["converted_validation"] = val.converted
    split.record["images"]["augment"] = datasets.train_augmentation(c.data, split.facts).describe()
    return RunData(split=split, loader=loader, val_images=val.images, val_labels=val.labels,
                   num_classes=split.facts.num_classes, in_channels=split.facts.in_channels)


def _create_model(c: TrainConfig, spec: dict[str, Any], data: RunData, device: torch.device,
                  warm_start: bool, verbose: bool = False) -> nn.Module:
    """The model ``spec`` describes, on ``device``, checked on two training images, warm-started from
    ``init.from`` when asked (``verbose``: say on stderr what a load from elsewhere, or a non-strict one, left
    out)."""
    kwargs = dict(spec)
    try:
        model = create_model(kwargs.pop("name"), **kwargs)
    except ConfigError:
        raise
    except AdvlabError as exc:  # the model's own checks of model.options / model.activation
        raise ConfigError(f"model: {exc}") from None
    model = model.to(device)
    width = c.model.projection_dim if c.model.head == "projection" else data.num_classes
    try:
        check_model_fits(model, data.split.images[:2], width, device)
    except AdvlabError as exc:
        raise ConfigError(f"model: {exc}") from None
    if c.init.from_ and warm_start:
        try:
            report = load_warm_start(model, c.init.from_, spec, c.init.part, strict=c.init.strict)
        except AdvlabError as exc:
            raise ConfigError(f"init.from: {exc}") from None
        if report is not None and verbose:
            print(describe_report(report, f"init.from {c.init.from_}"), file=sys.stderr, flush=True)
    return model


def _create_recipe(c: TrainConfig, data: RunData, model: nn.Module, optimizer: torch.optim.Optimizer,
                   device: torch.device, collective: Collective) -> Recipe:
    """The recipe of the config's four parts, told the facts of this run (``RecipeEnv``)."""
    split = data.split
    has_meta = len(split.meta_labels) > 0
    labelled_images, labelled = split.labelled()
    env = RecipeEnv(num_train=len(split.labels), num_classes=data.num_classes, epochs=c.epochs, eps=c.eps,
                    norm=c.norm, device=device, seed=c.seed, first_decay_epoch=first_decay_epoch(c.schedule, c.epochs),
                    class_counts=torch.bincount(labelled, minlength=data.num_classes).tolist(),
                    meta_images=split.meta_images if has_meta else None,
                    meta_labels=split.meta_labels if has_meta else None,
                    model=model, optimizer=optimizer, collective=collective,
                    train_images=labelled_images, train_labels=labelled, knn=dataclasses.asdict(c.knn),
                    dataset=c.data.dataset)
    recipe = create_recipe(c.recipe_spec(), env)
    if collective.distributed:
        for kind, part in recipe.parts():
            if not part.distributed:
                raise ConfigError(f"{kind}.name: {part.name!r} does not support training over several "
                                  "processes yet; run it in one process (without torchrun)")
    return recipe


def _check_distributed(config: TrainConfig, device: torch.device) -> None:
    """ConfigError naming the key for what a run over several processes cannot do (yet)."""
    if config.compile != "none":
        raise ConfigError("compile: torch.compile is not combined with training over several processes yet; "
                          "use compile=none under torchrun")
    if config.distributed.sync_batchnorm and device.type != "cuda":
        raise ConfigError(f"distributed.sync_batchnorm: SyncBatchNorm needs CUDA devices; this run trains on "
                          f"{device.type}")
    distributed.pick_backend(config.distributed.backend, device)
