#!/usr/bin/env bash
# DistributedDataParallel on one GPU: the same run without torchrun and under torchrun with one process (NCCL),
# to see the NCCL path run and what the process group costs. Fashion-MNIST in $ADVLAB_DATA/fashion-mnist.
# Usage: OUT=results_dir ADVLAB_DATA=folder bash benchmarks/gpu_distributed.sh   (about 2 minutes)
set -u
OUT=${OUT:-/tmp/gpu-ddp}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 ADVLAB_DATA=${ADVLAB_DATA:-$PWD/.data}
A="--preset pgd-at --quiet --eval-n 1000 epochs=3 data.train_size=20000 validation.n=1000 evaluation.attacks=[pgd20] device=cuda"
timeout 150 python3 -m advlab train $A --out "$OUT/plain" --overwrite 2>&1 | tail -n 3
timeout 150 python3 -m torch.distributed.run --standalone --nproc_per_node=1 --max_restarts=0 \
  -m advlab train $A --out "$OUT/torchrun1" --overwrite 2>&1 | tail -n 3
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for name in ("plain", "torchrun1"):
    rows = [json.loads(l) for l in (out / name / "metrics.jsonl").read_text().splitlines()]
    s = json.loads((out / name / "summary.json").read_text())
    print(name, "img/s per epoch", [round(r["images_per_second"]) for r in rows],
          "val_robust", [round(r["val_robust"], 4) for r in rows],
          "test clean/pgd20 (last)", round(s["last"]["clean"]["acc"], 4), round(s["last"]["attacks"]["pgd20"]["acc"], 4))
PY
