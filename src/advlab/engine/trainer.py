"""The training engine: one explicit loop around the recipe's training step.

A run is validated and built in memory first (config, data, model, recipe), and only then writes its run
directory (:class:`advlab.runs.RunDir`): a failed start leaves an existing run as it was. Each epoch: train,
validate (clean and the evaluation's own attack on the validation split), let the parts react, append a line
to ``metrics.jsonl``, write ``last.pt`` (and ``best.pt`` when validation robust accuracy improves). At the
end, evaluate best and last on the test split and write ``summary.json``.

Under torchrun with several processes (``docs/DISTRIBUTED.md``) the same loop runs on every rank: each takes
its shard of every global batch, DistributedDataParallel averages the gradients, per-sample state is
exchanged after each step, validation and the final evaluation are dealt over the ranks and gathered, and
only rank 0 writes the run directory and prints.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .. import data as datasets
from .. import distributed
from ..config import TrainConfig, from_dict, load_config
from ..crashpoints import crash_point
from ..seeds import epoch_seed
from ..devices import pick_device
from ..errors import AdvlabError, ConfigError
from ..evaluation import as_classifier, describe_classifier, evaluate
from ..models import create_model, encoder_state_dict, load_encoder_state
from ..recipes import Recipe, RecipeEnv, create_recipe, train_step
from ..runs import (CHECKPOINT_NAMES, DATA, SUMMARY, TENSORBOARD, RunDir, load_checkpoint, load_model,
                    resolve_checkpoint)
from .acceleration import as_step_input, check_compiled, step_model
from .optimizers import create_optimizer
from .schedule import first_decay_epoch, create_schedule
from .tensorboard import EpochScalars
from .config_checks import check_config

VALIDATION_SEED_OFFSET = 12345  # the validation attack's random starts: seed + this, apart from the test's
RANK_STREAM = 1000  # under torchrun, rank r reseeds its global RNG each epoch from (seed, epoch, this + r)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())  # a checkpoint loaded onto a GPU carries these there
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class Trainer:
    """The model, data, optimiser and recipe of one run, built in memory; ``fit`` trains it into a RunDir.

    Building checks everything a run needs (config values, part options, the dataset's files, the model on
    the data's shape, the parts fitting together) and writes nothing.
    """

    def __init__(self, config: TrainConfig, run: RunDir | str | Path | None = None, progress: bool = True,
                 warm_start: bool = True) -> None:
        check_config(config)
        self.config = c = config
        self.run = RunDir(run) if isinstance(run, (str, Path)) else run
        launch = distributed.launch_from_env()
        self.device = distributed.process_device(pick_device(c.device), launch)
        if launch.distributed:
            _check_distributed(c, self.device)
        self.collective = distributed.start(launch, self.device, c.distributed.backend, c.distributed.timeout_s)
        self.progress = progress and self.collective.is_main
        torch.manual_seed(c.seed)

        meta = datasets.info(c.data.name)
        split = datasets.run_training_split(c.data, c.seed)  # advlab eval --classifier knn rebuilds it alike
        self.data_record = split.record
        self.train_images, self.train_labels = split.images, split.labels  # the kNN classifier's bank
        self.num_classes = meta.num_classes
        self.loader = datasets.DeviceLoader(
            split.images, split.labels, c.batch_size, device=self.device, shuffle=True,
            crop_padding=meta.crop_padding if c.data.crop_padding is None else c.data.crop_padding,
            flip=meta.flip if c.data.flip is None else c.data.flip, seed=c.seed,
        )
        if self.collective.distributed:
            self.loader.shard(self.collective.rank, self.collective.world_size)
        val_x, val_y = datasets.load(c.data.name, "val", root=c.data.root)
        self.val_x, self.val_y = val_x[: c.validation.n], val_y[: c.validation.n]

        self.model_spec = c.model_spec(meta.num_classes, meta.in_channels)
        spec = dict(self.model_spec)
        try:
            model = create_model(spec.pop("name"), **spec)
        except ConfigError:
            raise
        except AdvlabError as exc:  # the model's own checks of model.options / model.activation
            raise ConfigError(f"model: {exc}") from None
        self.model = model.to(self.device)
        width = c.model.projection_dim if c.model.head == "projection" else meta.num_classes
        _check_model_fits(self.model, split.images[:2], width, self.device)
        if c.init.from_ and warm_start:  # not when resuming: last.pt holds the weights (init.from may be gone)
            _load_warm_start(self.model, c.init.from_, self.model_spec, c.init.part)
        if self.collective.distributed and c.distributed.sync_batchnorm:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)  # same state-dict keys
        # the training step's model (compiled / channels-last, or DDP's wrapper under torchrun); self.model
        # stays the eager module it wraps, which checkpoints save
        self.step_model = step_model(self.model, c.compile, c.channels_last)
        if self.collective.distributed:  # broadcasts rank 0's parameters and buffers
            self.step_model = torch.nn.parallel.DistributedDataParallel(
                self.step_model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.compile_check: dict[str, float] | None = None
        if c.compile != "none":  # before anything is written: a compiler that gets the gradients wrong stops here
            n = min(c.batch_size, len(self.loader.labels))  # a training batch's shape: compiled once, reused
            x0 = as_step_input(self.loader.images[:n].float().div(255), c.channels_last)
            self.compile_check = check_compiled(self.model, self.step_model, x0, self.loader.labels[:n])
        self.optimizer = create_optimizer(self.model.parameters(), c.optimizer)
        self.rate = create_schedule(c.schedule, c.optimizer.lr, c.epochs)
        self.scaler = torch.amp.GradScaler("cuda") if c.precision == "fp16" else None

        has_meta = len(split.meta_labels) > 0
        env = RecipeEnv(num_train=len(split.labels), num_classes=meta.num_classes, epochs=c.epochs, eps=c.eps,
                        norm=c.norm, device=self.device, seed=c.seed,
                        first_decay_epoch=first_decay_epoch(c.schedule, c.epochs),
                        class_counts=torch.bincount(split.labels, minlength=meta.num_classes).tolist(),
                        meta_images=split.meta_images if has_meta else None,
                        meta_labels=split.meta_labels if has_meta else None,
                        model=self.model, optimizer=self.optimizer, collective=self.collective,
                        train_images=split.images, train_labels=split.labels, knn=dataclasses.asdict(c.knn),
                        dataset=c.data.name)
        self.recipe: Recipe = create_recipe(c.parts(), env)
        if self.collective.distributed:
            for kind, part in self.recipe.parts():
                if not part.distributed:
                    raise ConfigError(f"{kind}.name: {part.name!r} does not support training over several "
                                      "processes yet; run it in one process (without torchrun)")
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best = {"epoch": -1, "val_robust": -1.0, "val_clean": -1.0}
        self.tensorboard = EpochScalars() if c.logging.tensorboard else None  # checks the package

    @property
    def parts(self) -> dict[str, Any]:
        """The recipe's parts by kind."""
        return dict(self.recipe.parts())

    # ----------------------------------------------------------------------------------------------
    def payload(self, epoch: int) -> dict[str, Any]:
        """Everything a checkpoint holds after ``epoch`` (0-indexed) finished."""
        return {
            "model": self.model.state_dict(), "model_spec": self.model_spec, "data": self.config.data.name,
            "eps": self.config.eps, "norm": self.config.norm, "epoch": epoch + 1,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "rng": _rng_state(), "parts": {k: p.state_dict() for k, p in self.recipe.parts()},
            "history": self.history, "best": dict(self.best), "config": self.config.to_dict(),
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a ``last`` checkpoint: weights, optimiser, RNG, part state, history."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        for kind, part in self.recipe.parts():
            part.load_state_dict(ckpt["parts"].get(kind, {}))
        _set_rng_state(ckpt["rng"])
        self.history = list(ckpt["history"])
        self.best = dict(ckpt["best"])
        self.start_epoch = int(ckpt["epoch"])

    # ----------------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of :func:`advlab.recipes.train_step` over the training split; its log numbers."""
        c, comm = self.config, self.collective
        for _, part in self.recipe.parts():
            part.on_epoch_start(epoch)
        if comm.distributed:  # each rank its own stream (random starts, dropout), the same after a resume
            torch.manual_seed(epoch_seed(c.seed, epoch, RANK_STREAM + comm.rank))
        per_sample = {f"{kind}.{name}": t for kind, part in self.recipe.parts()
                      for name, t in part.per_sample_state().items()}
        self.loader.set_epoch(epoch)
        n_batches = len(self.loader)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        bar = tqdm(self.loader, total=n_batches, desc=f"epoch {epoch + 1}/{c.epochs}", leave=False,
                   disable=not self.progress, file=sys.stderr, dynamic_ncols=True)
        start = time.perf_counter()
        lr = self.rate(epoch)
        for i, (x, y, index) in enumerate(bar):
            x = as_step_input(x, c.channels_last)
            lr = self.rate(epoch + i / n_batches)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            # DDP averages the ranks' gradients: scaling by world * local / global makes it the gradient of
            # the mean over the global batch (the shards differ in size by at most one)
            global_n = min(c.batch_size, len(self.loader.labels) - i * c.batch_size)
            scale = comm.world_size * len(y) / global_n if comm.distributed else 1.0
            step = train_step(self.step_model, x, y, index, epoch, self.recipe,
                              self.optimizer, precision=c.precision, attack_precision=c.attack_precision,
                              scaler=self.scaler, loss_scale=scale)
            distributed.sync_rows(comm, index, per_sample)
            loss_sum += step.loss.detach() * len(y)
            correct += self.recipe.objective.correct(step).sum()
            seen += len(y)
            crash_point("batch")  # test hook (advlab.crashpoints); a no-op unless set
            if i % 20 == 0 or i == n_batches - 1:  # checked every few batches: each check waits for the device
                if not torch.isfinite(loss_sum):
                    raise AdvlabError(f"training loss became {loss_sum.item()} in epoch {epoch + 1} by batch {i + 1}; "
                                      "lower optimizer.lr or check the recipe options")
            if self.progress and (i % 10 == 0 or i == n_batches - 1):
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                                lr=f"{lr:.3g}")
        seconds = time.perf_counter() - start
        if comm.distributed:
            totals = comm.all_reduce_sum(torch.stack([loss_sum.double(), correct.double(),
                                                      torch.tensor(float(seen), dtype=torch.float64,
                                                                   device=loss_sum.device)]))
            loss_sum, correct, seen = totals[0], totals[1], int(totals[2].item())
        return {"lr": lr, "train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen,
                "train_seconds": seconds, "images_per_second": seen / seconds}

    def classifier(self, model: torch.nn.Module) -> torch.nn.Module:
        """What validation and evaluation attack (``evaluation.classifier``): ``model``, or a kNN classifier over
        its representation with the training split as the bank (built now, from the model as it is)."""
        c = self.config
        return as_classifier(model, c.evaluation.classifier, self.train_images, self.train_labels, self.num_classes,
                             dataclasses.asdict(c.knn), batch_size=c.validation.batch_size, device=self.device)

    def validate(self) -> dict[str, float]:
        """Clean and robust accuracy on the validation split, measured by :func:`advlab.evaluate` with the
        configured evaluation attack (``validation.attack``, default ``pgd20``: the attack that is reported);
        robust is the per-sample AND of clean and the attack."""
        c, v = self.config, self.config.validation
        result = evaluate(self.classifier(self.model), self.val_x, self.val_y, c.eps, c.norm, attacks=(v.attack,),
                          batch_size=v.batch_size, device=self.device, sanity=False,
                          seed=c.seed + VALIDATION_SEED_OFFSET, progress=False, num_classes=self.num_classes,
                          autoattack_version=c.evaluation.autoattack_version, collective=self.collective)
        crash_point("validation")  # test hook (advlab.crashpoints); a no-op unless set
        val = {"val_clean": result.accuracy("clean"), "val_robust": result.accuracy("robust")}
        return self.collective.broadcast_object(val)  # one decision for every rank (the same numbers anyway)

    # ----------------------------------------------------------------------------------------------
    def fit(self, until: int | None = None) -> None:
        """Train from ``start_epoch`` to the last epoch (or to epoch ``until``), checkpointing every epoch."""
        if self.run is None:
            raise AdvlabError("Trainer.fit needs a run directory: Trainer(config, run_dir)")
        c, run, main = self.config, self.run, self.collective.is_main
        if main:
            run.write_metrics(self.history)  # drops any line of an epoch that did not finish
        for epoch in range(self.start_epoch, c.epochs if until is None else min(until, c.epochs)):
            t0 = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch + 1}
            row.update(self.train_epoch(epoch))
            val = self.validate()
            row.update(val)
            for _, part in self.recipe.parts():
                part.on_validation(epoch, val)
                row.update(part.epoch_metrics())
            row["seconds"] = time.perf_counter() - t0
            improved = (val["val_robust"], val["val_clean"]) > (self.best["val_robust"], self.best["val_clean"])
            improved = self.collective.broadcast_object(improved)  # rank 0 decides; all keep the same best
            if improved:
                self.best = {"epoch": epoch + 1, **val}
            row["best_epoch"] = self.best["epoch"]
            self.history.append(row)
            if main:  # only rank 0 writes; the others hold the same state
                payload = self.payload(epoch)
                if improved:  # best first: last.pt is the epoch's commit point, so a kill between the two writes
                    run.save_checkpoint("best", payload)  # redoes the epoch and never leaves a stale best.pt
                run.save_checkpoint("last", payload)
                run.append_metrics(row)
                if self.tensorboard is not None:
                    self.tensorboard.write(row, run.file(TENSORBOARD))
            self.log(row)
        self.collective.barrier()  # the checkpoints are on disk before any rank reads them

    def log(self, row: dict[str, Any]) -> None:
        if not self.progress:
            return
        extra = {k: v for k, v in row.items() if k not in {
            "epoch", "lr", "train_loss", "train_acc", "val_clean", "val_robust", "seconds", "train_seconds",
            "images_per_second", "best_epoch"}}
        extra_text = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in extra.items() if not isinstance(v, (list, dict)))
        print(f"epoch {row['epoch']:>3}/{self.config.epochs}  lr {row['lr']:.4g}  loss {row['train_loss']:.4f}  "
              f"train-acc {row['train_acc']:.3f}  val-clean {row['val_clean']:.3f}  "
              f"val-robust {row['val_robust']:.3f}  {row['images_per_second']:.0f} img/s  "
              f"{row['seconds']:.1f}s  {extra_text}", file=sys.stderr, flush=True)

    # ----------------------------------------------------------------------------------------------
    def final_evaluation(self) -> dict[str, Any]:
        """Evaluate the configured checkpoints on the test split; write summary.json; return it."""
        c, e, run = self.config, self.config.evaluation, self.run
        test_x, test_y = datasets.load(c.data.name, "test", root=c.data.root)
        test_x, test_y = test_x[: e.n], test_y[: e.n]
        summary: dict[str, Any] = {"preset": c.preset, "run_dir": str(run.path),
                                   "best_epoch": self.best["epoch"], "last_epoch": c.epochs,
                                   "eval_n": len(test_y), "data": self.data_record,
                                   "history_tail": self.history[-1:] if self.history else []}
        results: dict[int, dict[str, Any]] = {}
        for which in e.checkpoints:
            model, ckpt = load_model(run.path, which, device=self.device)
            model = self.classifier(model)
            epoch = int(ckpt["epoch"])
            if epoch not in results:
                if self.progress:
                    print(f"evaluating {which} (epoch {epoch}) on {len(test_y)} test points: "
                          f"{', '.join(e.attacks)}", file=sys.stderr, flush=True)
                result = evaluate(model, test_x, test_y, eps=c.eps, norm=c.norm, attacks=tuple(e.attacks),
                                  batch_size=e.batch_size, device=self.device, sanity=e.sanity, seed=c.seed,
                                  progress=self.progress, autoattack_version=e.autoattack_version,
                                  collective=self.collective)
                results[epoch] = {"epoch": epoch, "classifier": describe_classifier(model), **result.to_dict()}
                crash_point("evaluation")  # test hook (advlab.crashpoints); a no-op unless set
                summary.setdefault("tables", {})[which] = result.table()
            else:
                summary.setdefault("tables", {})[which] = f"(same checkpoint as epoch {epoch}, shown above)"
            summary[which] = results[epoch]
        if self.collective.is_main:
            run.write_json(SUMMARY, summary)
        return summary


def _check_distributed(config: TrainConfig, device: torch.device) -> None:
    """ConfigError naming the key for what a run over several processes cannot do (yet)."""
    if config.compile != "none":
        raise ConfigError("compile: torch.compile is not combined with training over several processes yet; "
                          "use compile=none under torchrun")
    if config.distributed.sync_batchnorm and device.type != "cuda":
        raise ConfigError(f"distributed.sync_batchnorm: SyncBatchNorm needs CUDA devices; this run trains on "
                          f"{device.type}")
    distributed.pick_backend(config.distributed.backend, device)


def _check_model_fits(model: torch.nn.Module, images: torch.Tensor, width: int, device: torch.device) -> None:
    """ConfigError unless the model maps two training images to (2, width): logits of the dataset's classes, or
    a projection of ``model.projection_dim``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(images.to(device).float().div(255))
    except RuntimeError as exc:
        raise ConfigError(f"model: cannot process the dataset's images of shape {tuple(images.shape[1:])}: "
                          f"{str(exc).splitlines()[0]}") from None
    finally:
        model.train(was_training)
    if not torch.is_tensor(out) or tuple(out.shape) != (len(images), width):
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ConfigError(f"model: must return outputs of shape (B, {width}) for this dataset and head, got {got}")


def _load_warm_start(model: torch.nn.Module, source: str, spec: dict[str, Any], part: str = "model") -> None:
    """Load the weights of ``source`` (a run directory's best checkpoint, or a checkpoint file) into ``model``:
    all of them (``part`` model: the same architecture), or the encoder's (``part`` encoder: any head on the
    same backbone, e.g. a linear head on a self-supervised encoder; the head keeps its initialisation).
    ConfigError naming ``init.from`` when it is missing, unreadable or of another architecture."""
    if part == "encoder":
        try:
            source_model, _ = load_model(source, "best")
            load_encoder_state(model, encoder_state_dict(source_model), f"init.from {source}")
        except AdvlabError as exc:
            raise ConfigError(f"init.from: {exc}") from None
        return
    try:
        ckpt = load_checkpoint(resolve_checkpoint(source, "best"))
    except AdvlabError as exc:
        raise ConfigError(f"init.from: {exc}") from None
    if ckpt.get("model_spec") != spec:
        raise ConfigError(f"init.from: {source} holds model {ckpt.get('model_spec')}, this run builds {spec}")
    model.load_state_dict(ckpt["model"])


def summary_table(summary: dict[str, Any]) -> str:
    """A plain-text table of the final evaluation of best and last."""
    lines = []
    record = summary.get("data") or {}
    if record.get("imbalance") or record.get("label_noise") or record.get("meta_size"):
        lines.append(f"training split: {record.get('size')} images, per class {record.get('class_counts')}"
                     + (f"; meta split {record['meta_size']} images" if record.get("meta_size") else ""))
    noise = record.get("label_noise")
    if noise:
        per_class = ", ".join(f"{r:.3f}" for r in noise["realised_rate_per_class"])
        lines.append(f"label noise: {noise['kind']}, realised rate {noise['realised_rate']:.4f} (per class {per_class})")
    for which in CHECKPOINT_NAMES:
        if which not in summary:
            continue
        lines.append(f"== {which} checkpoint (epoch {summary[which]['epoch']}) ==")
        lines.append(summary["tables"][which])
    return "\n".join(lines)


def _as_config(config: TrainConfig | dict | str, overrides: list[str] | None) -> TrainConfig:
    if overrides is not None and (not isinstance(overrides, (list, tuple))
                                  or not all(isinstance(o, str) for o in overrides)):
        raise ConfigError(f"overrides must be a list of 'key=value' strings, got {overrides!r}")
    if isinstance(config, Path):
        config = str(config)
    if not isinstance(config, (TrainConfig, dict, str)):
        raise ConfigError(f"config must be a TrainConfig, a mapping, or a preset name or YAML path, got "
                          f"{type(config).__name__}")
    if isinstance(config, str):
        return load_config(config, overrides)
    if isinstance(config, dict):
        if overrides:
            raise ConfigError("overrides go with a preset name; edit the mapping directly instead")
        return from_dict(config)
    if overrides:
        raise ConfigError("overrides go with a preset name; edit the TrainConfig directly instead")
    return config


def train(config: TrainConfig | dict | str, out: str | Path | None = None, *, overrides: list[str] | None = None,
          overwrite: bool = False, progress: bool = True, evaluate: bool = True) -> dict[str, Any]:
    """Train a model as ``config`` says (a TrainConfig, a plain mapping, or a preset name / YAML path).

    The whole run is checked and built before anything is written: a ConfigError (also for a ``config``,
    ``out`` or ``overrides`` of the wrong type), DataError or AdvlabError leaves ``out`` as it was (also with
    ``overwrite``). Then writes the run to ``out`` (or ``config.out``, or
    ``runs/<preset>``) and returns the summary (also in ``summary.json``); with ``evaluate=False`` it returns
    after training.
    """
    config = _as_config(config, overrides)
    if out is not None and not isinstance(out, (str, Path)):
        raise ConfigError(f"out must be a folder path (str or Path), got {out!r}")
    path = out or config.out or f"runs/{config.preset}"
    RunDir.check_new(path, overwrite)  # reads only: every rank checks, and fails alike
    trainer = Trainer(config, None, progress=progress)
    with trainer.collective:
        if trainer.collective.is_main:
            trainer.run = RunDir.create(path, overwrite)
            trainer.run.write_config(config)
            trainer.run.write_json(DATA, trainer.data_record)
        else:
            trainer.run = RunDir(path)
        trainer.collective.barrier()
        return _run(trainer, evaluate)


def resume(run_dir: str | Path, *, progress: bool = True, evaluate: bool = True) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its ``last`` checkpoint (or from scratch if it has none)."""
    run = RunDir.open(run_dir)
    trainer = Trainer(run.read_config(), run, progress=progress, warm_start=not run.has_checkpoint("last"))
    with trainer.collective:
        main = trainer.collective.is_main
        if main:
            run.remove_partial_writes()
        trainer.collective.barrier()  # (a checkpoint written by any number of processes resumes on any number)
        if run.has_checkpoint("last"):
            trainer.restore(run.load_checkpoint("last", map_location=trainer.device))
        if main and run.read_json(DATA) is None:
            run.write_json(DATA, trainer.data_record)
        return _run(trainer, evaluate)


def _run(trainer: Trainer, evaluate: bool) -> dict[str, Any]:
    trainer.fit()
    if not evaluate:
        return {"run_dir": str(trainer.run.path), "history": trainer.history, "best": trainer.best}
    summary = trainer.final_evaluation()
    if trainer.progress:
        print(summary_table(summary), flush=True)
    return summary
