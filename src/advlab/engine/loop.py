"""The training loop: train one epoch, validate, keep the best, checkpoint; repeat.

Each epoch (0-indexed ``epoch``, logged 1-indexed):

1. :func:`train_one_epoch`: :func:`advlab.recipes.train_step` over the training split;
2. :func:`validate`: clean and robust accuracy on the validation split, under the evaluation's own attack
   (``validation.attack``), so the best checkpoint is chosen by the attack that is reported;
3. the parts react to it (``on_validation``: NoiLIn's noise rate, FRL's duals) and add their metrics;
4. :func:`improves`: is it the best epoch so far (validation robust accuracy, ties broken by clean)?
5. write ``best.pt`` (if it improved) then ``last.pt``, append the row to ``metrics.jsonl``;
6. :func:`advlab.engine.collapse.collapsed`: has robustness collapsed (catastrophic overfitting)? Say so, and
   with ``training.stop_on_collapse`` stop, the best checkpoint kept.

Under torchrun with several processes the same loop runs on every rank: each takes its shard of every global
batch, DistributedDataParallel averages the gradients, per-sample state is exchanged after each step,
validation is dealt over the ranks and gathered, and only rank 0 writes the run directory and prints.
"""
from __future__ import annotations

import sys
import time
from typing import Any

import torch
from tqdm import tqdm

from .. import distributed
from ..crashpoints import crash_point
from ..errors import AdvlabError
from ..evaluation import evaluate
from ..recipes import train_step
from ..runs import TENSORBOARD, TRAINING_COLUMNS, RunDir
from ..seeds import epoch_seed
from .acceleration import as_step_input
from .collapse import collapsed
from .run import Run
from .state import TrainingState, checkpoint_payload

VALIDATION_SEED_OFFSET = 12345  # the validation attack's random starts: seed + this, apart from the test's
RANK_STREAM = 1000  # under torchrun, rank r reseeds its global RNG each epoch from (seed, epoch, this + r)


def train_one_epoch(run: Run, epoch: int) -> dict[str, float]:
    """One epoch (0-indexed) of :func:`advlab.recipes.train_step` over the training split; its log numbers:
    ``lr`` (the last step's), ``train_loss`` and ``train_acc`` (means over the epoch's samples, all ranks),
    ``train_seconds``, ``images_per_second``.

    Raises:
        AdvlabError: the training loss became NaN or infinite (checked every 20 batches).
    """
    c, comm, loader = run.config, run.collective, run.data.loader
    for _, part in run.recipe.parts():
        part.on_epoch_start(epoch)
    if comm.distributed:  # each rank its own stream (random starts, dropout), the same after a resume
        torch.manual_seed(epoch_seed(c.seed, epoch, RANK_STREAM + comm.rank))
    per_sample = {f"{kind}.{name}": t for kind, part in run.recipe.parts()
                  for name, t in part.per_sample_state().items()}
    loader.set_epoch(epoch)
    n_batches = len(loader)
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device, dtype=torch.long)
    seen = 0
    bar = tqdm(loader, total=n_batches, desc=f"epoch {epoch + 1}/{c.epochs}", leave=False,
               disable=not run.progress, file=sys.stderr, dynamic_ncols=True)
    start = time.perf_counter()
    lr = run.rate(epoch)
    for i, (x, y, index) in enumerate(bar):
        x = as_step_input(x, c.channels_last)
        lr = run.rate(epoch + i / n_batches)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        # DDP averages the ranks' gradients: scaling by world * local / global makes it the gradient of the mean
        # over the global batch (the shards differ in size by at most one)
        global_n = min(c.batch_size, len(loader.labels) - i * c.batch_size)
        scale = comm.world_size * len(y) / global_n if comm.distributed else 1.0
        step = train_step(run.step_model, x, y, index, epoch, run.recipe, run.optimizer, precision=c.precision,
                          attack_precision=c.attack_precision, scaler=run.scaler, loss_scale=scale)
        distributed.sync_rows(comm, index, per_sample)
        loss_sum += step.loss.detach() * len(y)
        correct += run.recipe.objective.correct(step).sum()
        seen += len(y)
        crash_point("batch")  # test hook (advlab.crashpoints); a no-op unless set
        if i % 20 == 0 or i == n_batches - 1:  # checked every few batches: each check waits for the device
            if not torch.isfinite(loss_sum):
                raise AdvlabError(f"training loss became {loss_sum.item()} in epoch {epoch + 1} by batch {i + 1}; "
                                  "lower optimizer.lr or check the recipe options")
        if run.progress and (i % 10 == 0 or i == n_batches - 1):
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}", lr=f"{lr:.3g}")
    seconds = time.perf_counter() - start
    if comm.distributed:
        totals = comm.all_reduce_sum(torch.stack([loss_sum.double(), correct.double(),
                                                  torch.tensor(float(seen), dtype=torch.float64,
                                                               device=loss_sum.device)]))
        loss_sum, correct, seen = totals[0], totals[1], int(totals[2].item())
    return {"lr": lr, "train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen,
            "train_seconds": seconds, "images_per_second": seen / seconds}


def validate(run: Run) -> dict[str, float]:
    """Clean and robust accuracy (fractions) on the validation split, ``{"val_clean", "val_robust"}``, measured
    by :func:`advlab.evaluate` with the configured evaluation attack (``validation.attack``, default ``pgd20``:
    the attack that is reported); robust is the per-sample AND of clean and the attack."""
    c, v = run.config, run.config.validation
    result = evaluate(run.classifier(run.model), run.data.val_images, run.data.val_labels, c.eps, c.norm,
                      attacks=(v.attack,), batch_size=v.batch_size, device=run.device, sanity=False,
                      seed=c.seed + VALIDATION_SEED_OFFSET, progress=False, num_classes=run.data.num_classes,
                      autoattack_version=c.evaluation.autoattack_version, collective=run.collective)
    crash_point("validation")  # test hook (advlab.crashpoints); a no-op unless set
    val = {"val_clean": result.accuracy("clean"), "val_robust": result.accuracy("robust")}
    return run.collective.broadcast_object(val)  # one decision for every rank (the same numbers anyway)


def improves(val: dict[str, float], best: dict[str, Any]) -> bool:
    """Whether an epoch's validation beats the best so far: higher robust accuracy, ties broken by clean."""
    return (val["val_robust"], val["val_clean"]) > (best["val_robust"], best["val_clean"])


def fit(run: Run, state: TrainingState, run_dir: RunDir, until: int | None = None) -> None:
    """Train from ``state.epoch`` to the last epoch (or to epoch ``until``), checkpointing every epoch into
    ``run_dir``; ``state`` advances with the run."""
    c, main = run.config, run.collective.is_main
    if main:
        run_dir.write_metrics(state.history)  # drops any line of an epoch that did not finish
    for epoch in range(state.epoch, c.epochs if until is None else min(until, c.epochs)):
        if state.stopped:
            break
        t0 = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch + 1}
        row.update(train_one_epoch(run, epoch))
        val = validate(run)
        row.update(val)
        for _, part in run.recipe.parts():
            part.on_validation(epoch, val)
            row.update(part.epoch_metrics())
        row["seconds"] = time.perf_counter() - t0
        improved = run.collective.broadcast_object(improves(val, state.best))  # rank 0 decides for all
        if improved:
            state.best = {"epoch": epoch + 1, **val}
        row["best_epoch"] = state.best["epoch"]
        state.history.append(row)
        state.epoch = epoch + 1
        collapse = collapsed(state.history, c.training.collapse_ratio)
        row["collapsed"] = collapse is not None
        if collapse and c.training.stop_on_collapse:
            state.stopped = f"{collapse}; stopped (training.stop_on_collapse), best checkpoint: epoch {state.best['epoch']}"
        if main:  # only rank 0 writes; the others hold the same state
            payload = checkpoint_payload(run, state)
            if improved:  # best first: last.pt is the epoch's commit point, so a kill between the two writes
                run_dir.save_checkpoint("best", payload)  # redoes the epoch and never leaves a stale best.pt
            run_dir.save_checkpoint("last", payload)
            run_dir.append_metrics(row)
            if run.tensorboard is not None:
                run.tensorboard.write(row, run_dir.file(TENSORBOARD))
        if run.progress:
            print(epoch_line(row, c.epochs), file=sys.stderr, flush=True)
        if collapse and run.progress:
            print(state.stopped or f"{collapse} (training.stop_on_collapse: true stops such a run)", file=sys.stderr,
                  flush=True)
    run.collective.barrier()  # the checkpoints are on disk before any rank reads them


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The console line of one finished epoch: the engine's columns, then each part's own numbers."""
    extra = {k: v for k, v in row.items() if k not in TRAINING_COLUMNS}
    extra_text = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in extra.items() if not isinstance(v, (list, dict)))
    return (f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.4g}  loss {row['train_loss']:.4f}  "
            f"train-acc {row['train_acc']:.3f}  val-clean {row['val_clean']:.3f}  "
            f"val-robust {row['val_robust']:.3f}  {row['images_per_second']:.0f} img/s  "
            f"{row['seconds']:.1f}s  {extra_text}")
