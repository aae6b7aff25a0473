"""The training loop: train one epoch, validate, keep the best, checkpoint; repeat.

Each epoch (0-indexed ``epoch``, logged 1-indexed):

1. :func:`train_one_epoch`: :func:`advlab.recipes.train_step` over the training split; after each step a
   mid-epoch checkpoint when one is due (``checkpoint.every``) or when SIGINT/SIGTERM asks the run to stop
   (``mid_epoch.py``, ``interrupt.py``);
2. :func:`validate`: clean and robust accuracy on the validation split, under the evaluation's own attack
   (``validation.attack``), so the best checkpoint is chosen by the attack that is reported;
3. the parts react to it (``on_validation``: NoiLIn's noise rate, FRL's duals) and add their metrics;
4. :func:`improves`: is it the best epoch so far (validation robust accuracy, ties broken by clean)?
5. write ``best.pt`` (if it improved) then ``last.pt``, append the row to ``metrics.jsonl``; remove the epoch's
   mid-epoch checkpoint;
6. :func:`advlab.engine.collapse.collapsed`: has robustness collapsed (catastrophic overfitting)? Say so, and
   with ``training.stop_on_collapse`` stop, the best checkpoint kept.

A run resumed from a mid-epoch checkpoint continues that epoch at its next batch (``state.restore``).

Under torchrun with several processes the same loop runs on every rank: each takes its shard of every global
batch, DistributedDataParallel averages the gradients, per-sample state is exchanged after each step,
validation is dealt over the ranks and gathered, and only rank 0 writes the run directory and prints.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

import torch
from tqdm import tqdm

from .. import distributed
from ..crashpoints import crash_point
from ..errors import AdvlabError
from ..evaluation import evaluate
from ..recipes import train_step
from ..runs import TENSORBOARD, TRAINING_COLUMNS, RunDir
from .acceleration import as_step_input
from .collapse import collapsed
from .mid_epoch import MidEpochCheckpoints
from .run import Run
from .run_clock import RunClock
from .state import EpochProgress, TrainingState, checkpoint_payload, seed_rank_stream

VALIDATION_SEED_OFFSET = 12345  # the validation attack's random starts: seed + this, apart from the test's


def train_one_epoch(run: Run, epoch: int, progress: EpochProgress | None = None,
                    after_step: Callable[[EpochProgress], None] | None = None,
                    clock: RunClock | None = None) -> dict[str, float]:
    """One epoch (0-indexed) of :func:`advlab.recipes.train_step` over the training split; its log numbers:
    ``lr`` (the last step's), ``train_loss`` and ``train_acc`` (means over the epoch's samples, all ranks),
    ``train_seconds``, ``images_per_second``.

    ``progress``: continue the epoch from a mid-epoch checkpoint (``state.restore`` has loaded the parts' state
    and the RNG: ``on_epoch_start`` is not called again); ``after_step(progress)``: called after each step (mid-epoch
    checkpoints, stopping on a signal); ``clock``: the whole run's time, shown beside the bar.

    Raises:
        AdvlabError: the training loss became NaN or infinite (checked every 20 batches).
    """
    c, comm, loader = run.config, run.collective, run.data.loader
    if progress is None:
        for _, part in run.recipe.parts():
            part.on_epoch_start(epoch)
        if comm.distributed:  # each rank its own stream (random starts, dropout), the same after a resume
            seed_rank_stream(c.seed, epoch, comm.rank)
        progress = EpochProgress.start(epoch, run.device)
    per_sample = {f"{kind}.{name}": t for kind, part in run.recipe.parts()
                  for name, t in part.per_sample_state().items()}
    loader.set_epoch(epoch)
    loader.start_at(progress.batch)  # the batches an uninterrupted epoch gives from there
    n_batches = progress.batches = len(loader)
    progress.started = time.perf_counter()
    bar = tqdm(loader, total=n_batches, initial=progress.batch, desc=f"epoch {epoch + 1}/{c.epochs}", leave=False,
               disable=not run.progress, file=sys.stderr, dynamic_ncols=True)
    shown: dict[str, str] = {}  # the bar's numbers
    for i, (x, y, index) in enumerate(bar, start=progress.batch):
        x = as_step_input(x, c.channels_last)
        lr = run.rate(epoch + i / n_batches)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        # DDP averages the ranks' gradients: scaling by world * local / global makes it the gradient of the mean
        # over the global batch (the shards differ in size by at most one)
        global_n = min(c.batch_size, loader.num_items - i * c.batch_size)
        scale = comm.world_size * len(y) / global_n if comm.distributed else 1.0
        step = train_step(run.step_model, x, y, index, epoch, run.recipe, run.optimizer, precision=c.precision,
                          attack_precision=c.attack_precision, scaler=run.scaler, loss_scale=scale)
        distributed.sync_rows(comm, index, per_sample)
        progress.add(step.loss, run.recipe.objective.correct(step).sum(), len(y))
        crash_point("batch")  # test hook (advlab.crashpoints); a no-op unless set
        if i % 20 == 0 or i == n_batches - 1:  # checked every few batches: each check waits for the device
            if not torch.isfinite(progress.loss_sum):
                raise AdvlabError(f"training loss became {progress.loss_sum.item()} in epoch {epoch + 1} by batch "
                                  f"{i + 1}; lower optimizer.lr or check the recipe options")
        if clock is not None:
            clock.step()
        if run.progress:
            _show(bar, shown, progress, lr, clock, last=i == n_batches - 1)
        if after_step is not None:
            after_step(progress)
    seconds = progress.train_seconds()
    loss_sum, correct, seen = progress.loss_sum, progress.correct, progress.seen
    if comm.distributed:
        totals = comm.all_reduce_sum(torch.stack([loss_sum.double(), correct.double(),
                                                  torch.tensor(float(seen), dtype=torch.float64,
                                                               device=loss_sum.device)]))
        loss_sum, correct, seen = totals[0], totals[1], int(totals[2].item())
    return {"lr": run.rate(epoch + (n_batches - 1) / n_batches), "train_loss": loss_sum.item() / seen,
            "train_acc": correct.item() / seen, "train_seconds": seconds, "images_per_second": seen / seconds}


def _show(bar: tqdm, shown: dict[str, str], progress: EpochProgress, lr: float, clock: RunClock | None,
          last: bool) -> None:
    """The bar's numbers ``shown`` (loss and accuracy every 10 batches: each read waits for the device), the
    run's elapsed and remaining time, and once it is known the line with the run's estimated time."""
    if progress.batch % 10 == 1 or last:
        shown.update(loss=f"{progress.loss_sum.item() / progress.seen:.3f}",
                     acc=f"{progress.correct.item() / progress.seen:.3f}", lr=f"{lr:.3g}")
    if clock is not None:
        shown["run"] = clock.text()
    bar.set_postfix(shown, refresh=False)
    line = clock.start_line() if clock is not None else None
    if line:
        tqdm.write(line, file=sys.stderr)


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
    """Train from ``state.epoch`` (mid-epoch from ``state.progress`` when set) to the last epoch (or to epoch
    ``until``), checkpointing into ``run_dir`` at each epoch's end and in between (``checkpoint.every``);
    ``state`` advances with the run.

    Raises:
        RunStopped: SIGINT or SIGTERM stopped the run at the end of a step, its checkpoint written (a second
            Ctrl-C: at once, without one); the message gives the command that continues it.
    """
    c, main = run.config, run.collective.is_main
    if main:
        run_dir.write_metrics(state.history)  # drops any line of an epoch that did not finish
    clock = _run_clock(run, state)
    with MidEpochCheckpoints(run, state, run_dir) as checkpoints:  # also: SIGINT and SIGTERM stop at a step's end
        for epoch in range(state.epoch, c.epochs if until is None else min(until, c.epochs)):
            if state.stopped:
                break
            progress, state.progress = state.progress, None  # the epoch in progress, on a mid-epoch resume
            t0 = time.perf_counter() - (progress.seconds if progress is not None else 0.0)
            row: dict[str, Any] = {"epoch": epoch + 1}
            row.update(train_one_epoch(run, epoch, progress, checkpoints.after_step, clock))
            t_val = time.perf_counter()
            val = validate(run)
            clock.validation(time.perf_counter() - t_val)
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
                state.stopped = (f"{collapse}; stopped (training.stop_on_collapse), best checkpoint: epoch "
                                 f"{state.best['epoch']}")
            if main:  # only rank 0 writes; the others hold the same state
                payload = checkpoint_payload(run, state)
                if improved:  # best first: last.pt is the epoch's commit point, so a kill between the two writes
                    run_dir.save_checkpoint("best", payload)  # redoes the epoch and never leaves a stale best.pt
                run_dir.save_checkpoint("last", payload)
                run_dir.append_metrics(row)
                if run.tensorboard is not None:
                    run.tensorboard.write(row, run_dir.file(TENSORBOARD))
            crash_point("epoch")  # test hook (advlab.crashpoints); a no-op unless set
            if run.progress:
                print(epoch_line(row, c.epochs), file=sys.stderr, flush=True)
            if collapse and run.progress:
                print(state.stopped or f"{collapse} (training.stop_on_collapse: true stops such a run)",
                      file=sys.stderr, flush=True)
            checkpoints.epoch_done()  # its mid-epoch checkpoint goes; a signal during validation stops here
    run.collective.barrier()  # the checkpoints are on disk before any rank reads them


def _run_clock(run: Run, state: TrainingState) -> RunClock:
    """The whole run's clock, from where ``state`` stands (mid-epoch when resumed there)."""
    n, progress = len(run.data.loader), state.progress
    before = sum(float(row.get("seconds", 0.0)) for row in state.history)
    return RunClock(total_steps=run.config.epochs * n,
                    steps_done=state.epoch * n + (progress.batch if progress is not None else 0),
                    validations_left=run.config.epochs - state.epoch,
                    elapsed_before=before + (progress.seconds if progress is not None else 0.0))


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The console line of one finished epoch: the engine's columns, then each part's own numbers."""
    extra = {k: v for k, v in row.items() if k not in TRAINING_COLUMNS}
    extra_text = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in extra.items() if not isinstance(v, (list, dict)))
    return (f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.4g}  loss {row['train_loss']:.4f}  "
            f"train-acc {row['train_acc']:.3f}  val-clean {row['val_clean']:.3f}  "
            f"val-robust {row['val_robust']:.3f}  {row['images_per_second']:.0f} img/s  "
            f"{row['seconds']:.1f}s  {extra_text}")
