"""What each process of tests/test_distributed.py runs: ``python ddp_worker.py MODE OUT [key=value ...]``,
under ``torchrun --nproc_per_node=2`` or alone (one process, the reference). Each rank writes what it holds
to ``OUT/rank<R>.pt`` (test code: advlab's own runs write only from rank 0).

Modes:
- ``epoch``: build a run (create_run) from the pgd-at preset (or ``--preset NAME`` first among the overrides) and the
  overrides, train epoch 0, save the model and every part's state;
- ``fit``: train all epochs into the run directory ``OUT/run``; save every part's state and the history;
- ``eval``: evaluate the model ``OUT/../model.pt`` (a small-cnn state dict) on 21 test points, save the result;
- ``fail``: ``advlab train`` with the overrides, whose rank 1 raises an AdvlabError at its second step;
- ``hang``: the same, but rank 1 sleeps for an hour at its second step instead.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch


def _config(overrides: list[str]):
    """The pgd-at preset, or the one named by leading ``--preset NAME``, with the overrides."""
    from advlab.config import load_config

    preset = "pgd-at"
    if overrides[:1] == ["--preset"]:
        preset, overrides = overrides[1], overrides[2:]
    return load_config(preset, overrides)


def _parts(run) -> dict:
    return {kind: part.state_dict() for kind, part in run.recipe.parts()}


def main(mode: str, out: Path, overrides: list[str]) -> int:
    torch.set_num_threads(1)
    from advlab import distributed

    rank = distributed.launch_from_env().rank
    out.mkdir(parents=True, exist_ok=True)
    if mode == "epoch":
        from advlab.engine.loop import train_one_epoch
        from advlab.engine.run import create_run

        run = create_run(_config(overrides), progress=False)
        row = train_one_epoch(run, 0)
        metrics = {kind: part.epoch_metrics() for kind, part in run.recipe.parts()}
        torch.save({"model": run.model.state_dict(), "parts": _parts(run), "row": row, "metrics": metrics},
                   out / f"rank{rank}.pt")
        run.collective.close()  # after a barrier: no rank tears down while another still talks
    elif mode == "fit":
        from advlab.engine.loop import fit
        from advlab.engine.run import create_run
        from advlab.engine.state import TrainingState
        from advlab.runs import RunDir

        run = create_run(_config(overrides), progress=False)
        if run.collective.is_main:
            run_dir = RunDir.create(out / "run", overwrite=False)
            run_dir.write_config(run.config)
        else:
            run_dir = RunDir(out / "run")
        run.collective.barrier()
        state = TrainingState()
        fit(run, state, run_dir)
        torch.save({"model": run.model.state_dict(), "parts": _parts(run), "history": state.history},
                   out / f"rank{rank}.pt")
        run.collective.close()
    elif mode == "eval":
        from advlab.data import load
        from advlab.evaluation import evaluate
        from advlab.models import create_model

        model = create_model("small-cnn", num_classes=10, in_channels=1)
        model.load_state_dict(torch.load(out.parent / "model.pt", weights_only=True))
        collective = distributed.start(distributed.launch_from_env(), torch.device("cpu"), "gloo", 120)
        x, y = load("fashion-mnist", "test")
        result = evaluate(model, x[:21], y[:21], eps=0.05, attacks=("pgd20", "cw20"), batch_size=4,
                          device="cpu", sanity=True, seed=3, progress=False, collective=collective)
        # the random start each point is attacked from (recorded by point): that of one process?
        import importlib

        pgd_module = importlib.import_module("advlab.attacks.pgd")  # the module (the package exports the function)

        starts, real = {}, pgd_module._start

        def recording(x, eps, *args):
            start = real(x, eps, *args)
            for row, d in zip(x.flatten(1), (start - x).flatten(1)):
                starts[round(row.sum().item(), 3)] = d[:8].clone()
            return start

        pgd_module._start = recording
        evaluate(model, x[:21], y[:21], eps=0.05, attacks=("pgd20",), batch_size=4, device="cpu", sanity=False,
                 seed=3, progress=False, collective=collective)
        pgd_module._start = real
        torch.save({"clean": result.clean.correct, "attacks": {k: a.correct for k, a in result.attacks.items()},
                    "sanity": result.sanity, "worst": {k: a.max_perturbation for k, a in result.attacks.items()},
                    "starts": starts}, out / f"rank{rank}.pt")
        collective.close()
    elif mode in ("fail", "hang"):
        from advlab import cli
        from advlab.engine import loop as loop_module
        from advlab.errors import AdvlabError

        if rank == 1:
            real, calls = loop_module.train_step, []

            def failing(*args, **kwargs):
                calls.append(1)
                if len(calls) == 2 and mode == "fail":
                    raise AdvlabError("planted failure on rank 1")
                if len(calls) == 2:  # a rank that stops answering without exiting
                    import time

                    time.sleep(3600)
                return real(*args, **kwargs)

            loop_module.train_step = failing
        return cli.main(["train", "--out", str(out / "run"), "--quiet", "--no-eval", *overrides])
    else:
        raise SystemExit(f"unknown mode {mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3:]))
