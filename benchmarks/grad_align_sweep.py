"""Choose the `grad-align` preset's lambda (objective.align_weight) on the validation split, never the test split.

GradAlign's official lambda grows with eps (github.com/tml-epfl/understanding-fast-adv-training,
sh/exps_diff_eps_cifar10.sh: 0.2 at eps 8/255 on CIFAR-10, 2.0 at 16/255; the SVHN script's rule gives other
values), and no official value exists for Fashion-MNIST at eps 0.1. Each candidate is the `grad-align` preset
at a reduced budget (BUDGET: 12,000 training images, 4 epochs) with one lambda; lambda 0 is plain FGSM from x,
the reference that shows whether the budget overfits catastrophically. Each trains without the final
evaluation (the test files are never loaded); its best checkpoint (chosen by the run's own per-epoch PGD-20
validation) is evaluated on the whole validation split (1,000 images carved from the training files) with clean
and PGD-20 accuracy by `demo_sweep.validation_numbers`, and the candidate with the highest validation robust
accuracy (ties: clean) is chosen. Prints every candidate's numbers and each epoch's validation robust accuracy
(a collapse shows there) as JSON:

    python benchmarks/grad_align_sweep.py --device cpu --out /tmp/grad-align-sweep

Runs already finished under --out with the same resolved config are reused.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from advlab.config import load_config, read_config  # noqa: E402
from advlab.engine.trainer import resume, train  # noqa: E402
from advlab.errors import AdvlabError  # noqa: E402
from demo_sweep import choose, validation_numbers  # noqa: E402

BUDGET = ["data.train_size=12000", "epochs=4", "validation.n=500"]
LAMBDAS = (0.0, 0.2, 2.0, 10.0)


def run_candidate(lam: float, out: Path, device: str, batch_size: int, seed: int) -> dict[str, Any]:
    """Train (or reuse) the preset with ``align_weight = lam`` without the final evaluation; its numbers."""
    overrides = [f"device={device}", f"seed={seed}", *BUDGET, f"objective.align_weight={lam}"]
    run_dir = out / f"lambda{lam:g}-s{seed}"
    wanted = load_config("grad-align", overrides).to_dict()
    saved = run_dir / "config.yaml"
    same = saved.exists() and read_config(saved).to_dict() == wanted
    history = run_dir / "metrics.jsonl"
    start = time.perf_counter()
    try:
        if not (same and history.exists() and len(history.read_text().splitlines()) >= wanted["epochs"]):
            if same and (run_dir / "last.pt").exists():
                resume(run_dir, progress=False, evaluate=False)
            else:
                train("grad-align", run_dir, overrides=overrides, overwrite=True, progress=False, evaluate=False)
    except AdvlabError as exc:
        print(f"[lambda {lam:g}] failed: {exc}", file=sys.stderr, flush=True)
        return {"name": f"lambda{lam:g}", "align_weight": lam, "error": str(exc)}
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in history.read_text().splitlines()]
    numbers = validation_numbers(run_dir, device, batch_size)
    print(f"[lambda {lam:g}] trained in {seconds:.0f} s: {numbers}", file=sys.stderr, flush=True)
    return {"name": f"lambda{lam:g}", "align_weight": lam, "seed": seed, "train_seconds": round(seconds, 1),
            "epoch_val_robust": [r.get("val_robust") for r in rows],
            "epoch_align_cos": [r.get("align_cos") for r in rows], **numbers}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/grad-align-sweep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=500, help="points per attacked batch of the selection")
    p.add_argument("--min-clean", type=float, default=0.0, help="least validation clean accuracy (default 0)")
    p.add_argument("--only", nargs="*", type=float, help="lambdas to run (default: all of LAMBDAS)")
    args = p.parse_args()
    results = [run_candidate(lam, Path(args.out), args.device, args.batch_size, args.seed)
               for lam in (args.only if args.only else LAMBDAS)]
    chosen = choose([r for r in results if r.get("align_weight", 0) > 0], args.min_clean)
    print(json.dumps({"candidates": results, "budget": BUDGET, "chosen": chosen["name"] if chosen else None},
                     indent=1))


if __name__ == "__main__":
    main()
