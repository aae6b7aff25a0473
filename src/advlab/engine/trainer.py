"""The training engine: one explicit loop around the four recipe parts.

Each epoch: train, validate (clean and PGD accuracy on the validation split), let the parts react,
append a line to ``metrics.jsonl``, write ``last.pt`` (and ``best.pt`` when validation robust accuracy
improves). At the end, evaluate best and last on the test split and write ``summary.json``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .. import data as datasets
from ..config import PART_KINDS, TrainConfig, from_dict, load_config, read_config, save_config
from ..errors import AdvlabError, ConfigError
from ..recipes import RecipeEnv, Step, build_part
from .checkpoint import load_checkpoint, save_checkpoint
from .schedule import first_decay_epoch, make_schedule


def pick_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; anything else must name a usable device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: invalid value {name!r}; allowed: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but no CUDA device is available")
    return device


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())  # a checkpoint loaded onto a GPU carries these there
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _write_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


class Trainer:
    """Holds the model, data, optimiser and recipe parts of one run; ``fit`` trains it."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, progress: bool = True) -> None:
        self.config = c = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.device = pick_device(c.device)
        if c.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("precision: fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        if not 0 < c.eps <= 1:
            raise ConfigError(f"eps: must be in (0, 1] for pixels in [0, 1], got {c.eps}")
        torch.manual_seed(c.seed)

        info = datasets.info(c.data.name)
        images, labels = datasets.load(c.data.name, "train", root=c.data.root)
        if c.data.train_size is not None:
            keep = datasets.class_balanced_subset(labels, c.data.train_size)
            images, labels = images[keep], labels[keep]
        self.num_classes = info.num_classes
        self.loader = datasets.DeviceLoader(
            images, labels, c.batch_size, device=self.device, shuffle=True,
            crop_padding=info.crop_padding if c.data.crop_padding is None else c.data.crop_padding,
            flip=info.flip if c.data.flip is None else c.data.flip, seed=c.seed,
        )
        val_x, val_y = datasets.load(c.data.name, "val", root=c.data.root)
        self.val_x = val_x[: c.validation.n].to(self.device).float().div_(255)
        self.val_y = val_y[: c.validation.n].to(self.device)

        from ..models import create

        self.model_spec = {
            "name": c.model.name, "num_classes": info.num_classes,
            "in_channels": info.in_channels, "activation": c.model.activation, **c.model.options,
        }
        spec = dict(self.model_spec)
        self.model = create(spec.pop("name"), **spec).to(self.device)
        o = c.optimizer
        if o.name == "sgd":
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                             weight_decay=o.weight_decay, nesterov=o.nesterov)
        else:
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        self.rate = make_schedule(c.schedule, o.lr, c.epochs)
        self.scaler = torch.amp.GradScaler("cuda") if c.precision == "fp16" else None

        env = RecipeEnv(num_train=len(labels), num_classes=info.num_classes, epochs=c.epochs, eps=c.eps,
                        norm=c.norm, device=self.device, seed=c.seed,
                        first_decay_epoch=first_decay_epoch(c.schedule, c.epochs))
        self.parts = {kind: build_part(kind, getattr(c, kind).name, getattr(c, kind).options, env)
                      for kind in PART_KINDS}
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best = {"epoch": -1, "val_robust": -1.0, "val_clean": -1.0}

    # ----------------------------------------------------------------------------------------------
    def payload(self, epoch: int) -> dict[str, Any]:
        """Everything a checkpoint holds after ``epoch`` (0-indexed) finished."""
        return {
            "model": self.model.state_dict(), "model_spec": self.model_spec, "data": self.config.data.name,
            "eps": self.config.eps, "norm": self.config.norm, "epoch": epoch + 1,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "rng": _rng_state(), "parts": {k: p.state_dict() for k, p in self.parts.items()},
            "history": self.history, "best": dict(self.best), "config": self.config.to_dict(),
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a ``last`` checkpoint: weights, optimiser, RNG, part state, history."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        for kind, part in self.parts.items():
            part.load_state_dict(ckpt["parts"].get(kind, {}))
        _set_rng_state(ckpt["rng"])
        self.history = list(ckpt["history"])
        self.best = dict(ckpt["best"])
        self.start_epoch = int(ckpt["epoch"])

    # ----------------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        from tqdm import tqdm

        c = self.config
        model, opt = self.model, self.optimizer
        labels, perturbation = self.parts["labels"], self.parts["perturbation"]
        weighting, objective = self.parts["weighting"], self.parts["objective"]
        for part in self.parts.values():
            part.on_epoch_start(epoch)
        self.loader.set_epoch(epoch)
        n_batches = len(self.loader)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        bar = tqdm(self.loader, total=n_batches, desc=f"epoch {epoch + 1}/{c.epochs}", leave=False,
                   disable=not self.progress, file=sys.stderr, dynamic_ncols=True)
        start = time.perf_counter()
        for i, (x, y, index) in enumerate(bar):
            lr = self.rate(epoch + i / n_batches)
            for group in opt.param_groups:
                group["lr"] = lr
            model.train()
            step = Step(model=model, x=x, y=y, index=index, epoch=epoch, labels=labels, weighting=weighting)
            with _autocast(c.precision, self.device):
                step.attack_target = labels.attack_target(step)
                perturbation.perturb(step)
                loss, logits = objective.loss(step)
            opt.zero_grad(set_to_none=True)
            if self.scaler:
                self.scaler.scale(loss).backward()
                self.scaler.step(opt)
                self.scaler.update()
            else:
                loss.backward()
                opt.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if i % 20 == 0 or i == n_batches - 1:  # checked every few batches: each check waits for the device
                if not torch.isfinite(loss_sum):
                    raise AdvlabError(f"training loss became {loss_sum.item()} in epoch {epoch + 1} by batch {i + 1}; "
                                      "lower optimizer.lr or check the recipe options")
            if self.progress and (i % 10 == 0 or i == n_batches - 1):
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                                lr=f"{lr:.3g}")
        seconds = time.perf_counter() - start
        return {"lr": lr, "train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen,
                "train_seconds": seconds, "images_per_second": seen / seconds}

    def validate(self) -> dict[str, float]:
        """Clean and PGD accuracy on the validation split (fixed random start, eval mode)."""
        from ..attacks import pgd

        v = self.config.validation
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed + 12345)
        clean = robust = 0
        was_training = self.model.training
        self.model.eval()
        for s in range(0, len(self.val_y), v.batch_size):
            x, y = self.val_x[s:s + v.batch_size], self.val_y[s:s + v.batch_size]
            with torch.no_grad():
                clean += (self.model(x).argmax(1) == y).sum().item()
            x_adv = pgd(self.model, x, y, eps=self.config.eps, step_size=2.5 * self.config.eps / v.steps,
                        steps=v.steps, norm=self.config.norm, generator=generator, track_final=False).x_adv
            with torch.no_grad():
                robust += (self.model(x_adv).argmax(1) == y).sum().item()
        self.model.train(was_training)
        n = len(self.val_y)
        return {"val_clean": clean / n, "val_robust": robust / n}

    # ----------------------------------------------------------------------------------------------
    def fit(self, until: int | None = None) -> None:
        """Train from ``start_epoch`` to the last epoch (or to epoch ``until``), checkpointing every epoch."""
        c = self.config
        metrics_path = self.run_dir / "metrics.jsonl"
        _write_lines(metrics_path, self.history)  # drops any line of an epoch that did not finish
        for epoch in range(self.start_epoch, c.epochs if until is None else min(until, c.epochs)):
            t0 = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch + 1}
            row.update(self.train_epoch(epoch))
            val = self.validate()
            row.update(val)
            for part in self.parts.values():
                part.on_validation(epoch, val)
                row.update(part.epoch_metrics())
            row["seconds"] = time.perf_counter() - t0
            improved = (val["val_robust"], val["val_clean"]) > (self.best["val_robust"], self.best["val_clean"])
            if improved:
                self.best = {"epoch": epoch + 1, **val}
            row["best_epoch"] = self.best["epoch"]
            self.history.append(row)
            payload = self.payload(epoch)
            save_checkpoint(self.run_dir / "last.pt", payload)
            if improved:
                save_checkpoint(self.run_dir / "best.pt", payload)
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            self.log(row)

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
        from ..evaluation import evaluate
        from .checkpoint import load_model

        c, e = self.config, self.config.evaluation
        test_x, test_y = datasets.load(c.data.name, "test", root=c.data.root)
        test_x, test_y = test_x[: e.n], test_y[: e.n]
        summary: dict[str, Any] = {"preset": c.preset, "run_dir": str(self.run_dir),
                                   "best_epoch": self.best["epoch"], "last_epoch": c.epochs,
                                   "eval_n": len(test_y), "history_tail": self.history[-1:] if self.history else []}
        results: dict[int, dict[str, Any]] = {}
        for which in e.checkpoints:
            model, ckpt = load_model(self.run_dir, which, device=self.device)
            epoch = int(ckpt["epoch"])
            if epoch not in results:
                if self.progress:
                    print(f"evaluating {which} (epoch {epoch}) on {len(test_y)} test points: "
                          f"{', '.join(e.attacks)}", file=sys.stderr, flush=True)
                result = evaluate(model, test_x, test_y, eps=c.eps, norm=c.norm, attacks=tuple(e.attacks),
                                  batch_size=e.batch_size, device=self.device, sanity=e.sanity, seed=c.seed,
                                  progress=self.progress, **_aa_kwargs(e.autoattack_version))
                results[epoch] = {"epoch": epoch, **result.to_dict()}
                summary.setdefault("tables", {})[which] = result.table()
            else:
                summary.setdefault("tables", {})[which] = f"(same checkpoint as epoch {epoch}, shown above)"
            summary[which] = results[epoch]
        tmp = self.run_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, self.run_dir / "summary.json")
        return summary


def _aa_kwargs(version: str) -> dict[str, Any]:
    return {} if version == "standard" else {"autoattack_version": version}


def summary_table(summary: dict[str, Any]) -> str:
    """A plain-text table of the final evaluation of best and last."""
    lines = []
    for which in ("best", "last"):
        if which not in summary:
            continue
        lines.append(f"== {which} checkpoint (epoch {summary[which]['epoch']}) ==")
        lines.append(summary["tables"][which])
    return "\n".join(lines)


def prepare_run_dir(out: str | Path, overwrite: bool) -> Path:
    run_dir = Path(out)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise AdvlabError(f"run directory {run_dir} is not empty; continue it with `advlab train --resume "
                              f"{run_dir}`, or pass --overwrite to start afresh")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def train(config: TrainConfig | dict | str, out: str | Path | None = None, *, overrides: list[str] | None = None,
          overwrite: bool = False, progress: bool = True, evaluate: bool = True) -> dict[str, Any]:
    """Train a model as ``config`` says (a TrainConfig, a plain mapping, or a preset name / YAML path).

    Writes the run to ``out`` (or ``config.out``, or ``runs/<preset>``) and returns the summary
    (also in ``summary.json``); with ``evaluate=False`` it returns after training.
    """
    if isinstance(config, str):
        config = load_config(config, overrides)
    elif isinstance(config, dict):
        config = from_dict(config)
    elif overrides:
        raise ConfigError("overrides go with a preset name; edit the TrainConfig directly instead")
    run_dir = prepare_run_dir(out or config.out or f"runs/{config.preset}", overwrite)
    save_config(config, run_dir / "config.yaml")
    trainer = Trainer(config, run_dir, progress=progress)
    return _run(trainer, evaluate)


def resume(run_dir: str | Path, *, progress: bool = True, evaluate: bool = True) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its ``last`` checkpoint (or from scratch if it has none)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise AdvlabError(f"{run_dir} is not an advlab run directory (no config.yaml)")
    trainer = Trainer(read_config(run_dir / "config.yaml"), run_dir, progress=progress)
    if (run_dir / "last.pt").exists():
        trainer.restore(load_checkpoint(run_dir / "last.pt", map_location=trainer.device))
    return _run(trainer, evaluate)


def _run(trainer: Trainer, evaluate: bool) -> dict[str, Any]:
    trainer.fit()
    if not evaluate:
        return {"run_dir": str(trainer.run_dir), "history": trainer.history, "best": trainer.best}
    summary = trainer.final_evaluation()
    if trainer.progress:
        print(summary_table(summary), flush=True)
    return summary
