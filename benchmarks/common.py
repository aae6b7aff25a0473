"""What the benchmark scripts share: train-or-reuse one run, read its numbers, format cells, name the machine."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from advlab.config import load_config, read_config
from advlab.engine.train import resume, train


def run_one(preset: str, run_dir: Path, overrides: list[str], *, force: bool = False,
            progress: bool = False) -> dict[str, Any]:
    """Train ``preset`` into ``run_dir`` and return its summary.

    A finished run whose saved config equals the one asked for is reused, an unfinished one is resumed from
    its ``last.pt``; ``force`` retrains.
    """
    wanted = load_config(preset, overrides).to_dict()
    saved = run_dir / "config.yaml"
    same = not force and saved.exists() and read_config(saved).to_dict() == wanted
    tag = f"[{Path(preset).stem} -> {run_dir}]"
    if same and (run_dir / "summary.json").exists():
        print(f"{tag} reusing", file=sys.stderr, flush=True)
        return json.loads((run_dir / "summary.json").read_text())
    start = time.perf_counter()
    if same and (run_dir / "last.pt").exists():
        print(f"{tag} resuming", file=sys.stderr, flush=True)
        summary = resume(run_dir, progress=progress)
    else:
        print(f"{tag} training", file=sys.stderr, flush=True)
        summary = train(preset, run_dir, overrides=overrides, overwrite=True, progress=progress)
    print(f"{tag} done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return summary


def claim(path: Path) -> bool:
    """Take the job of the run directory ``path`` for this process through the lock file ``<path>.claim``:
    True when no other process holds it (the caller removes the lock when done)."""
    lock = path.with_name(path.name + ".claim")
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def unclaim(out: Path) -> None:
    """Remove the claims (``<run dir>.claim``) that killed workers left one folder below ``out``."""
    for lock in out.glob("*/*.claim"):
        lock.unlink()


def history(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``, one per epoch."""
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def accuracy(entry: dict[str, Any] | None, what: str) -> float | None:
    """``clean``, ``robust`` or an attack's accuracy from one checkpoint's entry of ``summary.json``."""
    entry = entry or {}
    value = entry.get(what) if what in ("clean", "robust") else (entry.get("attacks") or {}).get(what)
    if isinstance(value, dict):
        value = value.get("acc")
    return float(value) if isinstance(value, (int, float)) else None


def cell(values: list[float | None], scale: float = 100.0, digits: int = 1) -> str:
    """Mean ± sample standard deviation of the values present (scaled), or a dash."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    text = f"{statistics.fmean(vals) * scale:.{digits}f}"
    return text + (f" ± {statistics.stdev(vals) * scale:.{digits}f}" if len(vals) > 1 else "")


def machine(device: str = "auto") -> str:
    """The hardware and torch version the numbers come from."""
    if device != "cpu" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return f"CPU ({cpu}, {torch.get_num_threads()} threads), torch {torch.__version__}"


def sanity_cell(entries: list[dict[str, Any] | None]) -> str:
    """The sanity checks of checkpoint entries of ``summary.json`` in one cell: ``passed`` when every check of
    every entry passed, else the failed checks (``FAILED large-eps``) and those not run (``not run: more-steps``)."""
    failed: list[str] = []
    not_run: list[str] = []
    for entry in entries:
        for check in (entry or {}).get("sanity") or []:
            bucket = failed if check.get("status") == "failed" else not_run if check.get("status") != "passed" else None
            if bucket is not None and check["name"] not in bucket:
                bucket.append(check["name"])
    if not any((entry or {}).get("sanity") for entry in entries):
        return "not run"
    parts = ([f"FAILED {', '.join(failed)}"] if failed else []) + ([f"not run: {', '.join(not_run)}"] if not_run else [])
    return "; ".join(parts) or "passed"
