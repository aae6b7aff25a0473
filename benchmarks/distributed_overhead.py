"""What training over several processes costs and gains: the same run, timed three ways.

On the CPU (the overhead of DistributedDataParallel with gloo): ``2 processes x 1 thread`` (torchrun) against
``1 process x 2 threads``, both on the same cores and the same global batch, so the difference is what the
process group costs (gradient all-reduce, per-sample-state exchange, gathered validation) against what two
threads give one process. On a GPU machine (``--device cuda``): 1 GPU against ``--gpus N`` GPUs, the scaling.

Each configuration is one ``advlab train`` run (``--no-eval``) in a fresh process; the number reported is the
training throughput of each epoch after the first (``images_per_second`` of ``metrics.jsonl``, which counts
the global batch) and the wall time of the whole command. Results go to ``--out`` as JSON and a Markdown table.

    python benchmarks/distributed_overhead.py                      # CPU: 2 x 1 thread vs 1 x 2 threads
    python benchmarks/distributed_overhead.py --device cuda --gpus 1 2 4 8
    python benchmarks/distributed_overhead.py --smoke              # seconds: checks the script, not the numbers

The full CPU size (the default) takes several minutes on 2 cores; ``--smoke`` is the tiny run for tests.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMING_KEY = "images_per_second"


def _train_args(args: argparse.Namespace, out: Path) -> list[str]:
    return ["-m", "advlab", "train", "--preset", args.preset, "--out", str(out), "--overwrite", "--quiet",
            "--no-eval", f"epochs={args.epochs}", f"batch_size={args.batch_size}",
            f"data.train_size={args.train_size}", f"perturbation.steps={args.steps}",
            f"validation.n={args.validation_n}", f"device={args.device}", *args.set]


def run_one(args: argparse.Namespace, name: str, processes: int, threads: int) -> dict:
    """One ``advlab train`` in ``processes`` processes of ``threads`` threads each; its timings."""
    out = Path(args.out) / "runs" / name
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
        "--max_restarts=0"]
    start = time.perf_counter()
    done = subprocess.run([*launcher, *_train_args(args, out)], env=env, capture_output=True, text=True,
                          timeout=args.timeout)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    later = [r[TIMING_KEY] for r in rows[1:]] or [r[TIMING_KEY] for r in rows]  # the first epoch warms up
    return {"name": name, "processes": processes, "threads": threads, "wall_seconds": wall,
            "images_per_second": statistics.median(later), "epochs": len(rows),
            "final_train_loss": rows[-1]["train_loss"], "final_val_robust": rows[-1]["val_robust"]}


def configurations(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(name, processes, threads) to run: the CPU comparison, or 1..N GPUs."""
    if args.device == "cpu":
        return [("1x2-threads", 1, 2), ("2x1-thread", 2, 1)]
    return [(f"{g}-gpu", g, 1) for g in args.gpus]


def table(results: list[dict]) -> str:
    base = results[0]["images_per_second"]
    lines = ["| run | processes x threads | img/s (median epoch after the first) | vs first row | wall s |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['processes']} x {r['threads']} | {r['images_per_second']:.0f} | "
                     f"{r['images_per_second'] / base:.2f}x | {r['wall_seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="pgd-at")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 2], help="GPU counts to compare (--device cuda)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128, help="the global batch, the same in every run")
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--steps", type=int, default=10, help="PGD steps of the training attack")
    p.add_argument("--validation-n", type=int, default=200)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--out", default="benchmarks/distributed_results")
    p.add_argument("--smoke", action="store_true", help="a tiny run that checks the script (seconds)")
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.batch_size, args.train_size, args.steps, args.validation_n = 2, 20, 60, 1, 10
        args.set = [*args.set, "validation.batch_size=5"]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    results = [run_one(args, name, procs, threads) for name, procs, threads in configurations(args)]
    report = {"config": {k: v for k, v in vars(args).items() if k != "timeout"}, "results": results}
    (Path(args.out) / "distributed_overhead.json").write_text(json.dumps(report, indent=2))
    text = table(results)
    (Path(args.out) / "distributed_overhead.md").write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
