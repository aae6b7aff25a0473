"""``advlab.train`` and ``advlab.resume``: a run from a config to its evaluated checkpoints.

    run = create_run(config)                  # everything built and checked in memory (engine/run.py)
    run_dir = RunDir.create(out)              # only now is anything written
    fit(run, TrainingState(), run_dir)        # the epochs (engine/loop.py)
    evaluate_checkpoints(run, state, run_dir) # best and last on the test split (engine/final_evaluation.py)

A failed start leaves an existing run directory as it was. Under torchrun every rank runs this; only rank 0
writes.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..config import TrainConfig, from_dict, load_config
from ..errors import ConfigError
from ..evaluation import AA_REDUCED_VERSIONS
from ..evaluation.estimate import estimate_evaluation, format_duration
from ..runs import DATA, RunDir, summary_table
from .final_evaluation import evaluate_checkpoints
from .interrupt import RunStopped, resume_command
from .loop import fit
from .run import Run, create_run
from .state import TrainingState, restore


def train(config: TrainConfig | dict | str, out: str | Path | None = None, *, overrides: list[str] | None = None,
          overwrite: bool = False, progress: bool = True, evaluate: bool = True) -> dict[str, Any]:
    """Train a model as ``config`` says (a TrainConfig, a plain mapping, or a preset name / YAML path with
    ``overrides``, ``key=value`` strings), write the run to ``out`` (or ``config.out``, or ``runs/<preset>``),
    and return its summary (also in ``summary.json``); with ``evaluate=False``, return after training.

    Raises (``out`` left as it was, also with ``overwrite``): ConfigError for a bad config or a ``config``,
    ``out`` or ``overrides`` of the wrong type; DataError; AdvlabError.
    """
    config = _as_config(config, overrides)
    if out is not None and not isinstance(out, (str, Path)):
        raise ConfigError(f"out must be a folder path (str or Path), got {out!r}")
    path = out or config.out or f"runs/{config.preset}"
    RunDir.check_new(path, overwrite)  # reads only: every rank checks, and fails alike
    run = create_run(config, progress=progress)
    with run.collective:
        if run.collective.is_main:
            run_dir = RunDir.create(path, overwrite)
            run_dir.write_config(run.config)  # with what precision / channels_last: auto chose
            run_dir.write_json(DATA, run.data.split.record)
        else:
            run_dir = RunDir(path)
        run.collective.barrier()
        return _finish(run, TrainingState(), run_dir, evaluate)


def resume(run_dir: str | Path, *, progress: bool = True, evaluate: bool = True) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its mid-epoch checkpoint (the epoch in progress, at its next batch),
    else its ``last`` checkpoint, else from scratch, on any number of processes; return its summary as
    :func:`train` does."""
    directory = RunDir.open(run_dir)
    has_checkpoint = directory.has_resume_point()
    run = create_run(directory.read_config(), progress=progress, warm_start=not has_checkpoint)
    with run.collective:
        main = run.collective.is_main
        if main:
            directory.remove_partial_writes()
        run.collective.barrier()  # (a checkpoint written by any number of processes resumes on any number)
        checkpoint = directory.load_resume_point(map_location=run.device) if has_checkpoint else None
        run.collective.barrier()  # rank 0 may have removed a stale mid-epoch checkpoint the others read
        state = restore(run, checkpoint) if checkpoint is not None else TrainingState()
        if main and directory.read_json(DATA) is None:
            directory.write_json(DATA, run.data.split.record)
        return _finish(run, state, directory, evaluate)


def _finish(run: Run, state: TrainingState, run_dir: RunDir, evaluate: bool) -> dict[str, Any]:
    if run.fast_defaults and run.progress:
        print(run.fast_defaults, file=sys.stderr, flush=True)
    if evaluate and run.progress:
        print(final_evaluation_line(run), file=sys.stderr, flush=True)
    fit(run, state, run_dir)
    if not evaluate:
        return {"run_dir": str(run_dir.path), "history": state.history, "best": state.best}
    try:
        summary = evaluate_checkpoints(run, state, run_dir)
    except KeyboardInterrupt:
        raise RunStopped(f"interrupted during the final evaluation (training is done); evaluate with: "
                         f"{resume_command(run_dir.path)}") from None
    if run.progress:
        print(summary_table(summary), flush=True)
    return summary


def final_evaluation_line(run: Run) -> str:
    """What the final evaluation will run and about how long it takes on this machine (an upper bound, the
    model timed now: ``advlab.evaluation.estimate``), and how to choose a smaller one; the default stays the
    standard AutoAttack."""
    c, e = run.config, run.config.evaluation
    timed = dict(n=e.n, eps=c.eps, norm=c.norm, batch_size=e.batch_size, num_classes=run.data.num_classes,
                 sanity=e.sanity, device=run.device, seed=c.seed, square_queries=1000)
    images = run.data.val_images[:64] if len(run.data.val_images) else run.data.split.images[:64]
    estimate = estimate_evaluation(run.model, images, attacks=e.attacks, autoattack_version=e.autoattack_version,
                                   **timed)
    attacks = ", ".join(f"autoattack ({e.autoattack_version})" if a == "autoattack" else a for a in e.attacks)
    line = (f"final evaluation: checkpoints {' and '.join(e.checkpoints)} on {e.n} test points, {attacks}; each "
            f"{estimate.text()}")
    if "autoattack" in e.attacks and e.autoattack_version not in AA_REDUCED_VERSIONS:
        smaller = estimate_evaluation(run.model, images, attacks=e.attacks, autoattack_version="fast",
                                      timings=estimate.timings, **timed)
        line += (f"; smaller: evaluation.autoattack_version=fast (at most about {format_duration(smaller.seconds)}, "
                 "an upper bound on the standard one's accuracy) or a smaller evaluation.n")
    return line


def _as_config(config: TrainConfig | dict | str | Path, overrides: list[str] | None) -> TrainConfig:
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
