#!/usr/bin/env bash
# The GPU rows of benchmarks/README.md's speed tables, in one call on one GPU (about 6 minutes on an H200; at most 9.5).
# Usage: OUT=results_dir bash benchmarks/gpu_speed.sh   (ART from a wheel folder: WHEELS=.whl)
# Each part has its own time limit, so one slow part cannot take the others' results with it.
set -u
OUT=${OUT:-/tmp/gpu-speed}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ -d "${WHEELS:-.whl}" ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site "${WHEELS:-.whl}"/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
S="python3 benchmarks/speed.py --device cuda"
# 1. preact-resnet18 at a batch that fills the GPU: precision, channels-last, compile; FLOP utilisation
timeout 180 $S --models preact-resnet18 --batch-size 1024 --batches 6 --rounds 2 --warmup 2 --no-art --mfu \
  --variants default bf16 bf16+channels-last bf16+channels-last+compile --out "$OUT/preact1024.json" 2>&1 | tail -n 14
# 2. against the official-style loop (fp32, batch 128) and ART at the same batch
timeout 80 $S --models preact-resnet18 --batch-size 128 --batches 10 --rounds 2 --warmup 2 \
  --variants default bf16+channels-last --out "$OUT/preact128.json" 2>&1 | tail -n 8
# 3. small-cnn: per-step overhead, CUDA graphs
timeout 70 $S --models small-cnn --batch-size 128 --batches 40 --rounds 3 --warmup 3 \
  --variants default cuda-graphs --out "$OUT/small.json" 2>&1 | tail -n 8
# 4. memory: peak per batch size (PGD-10, and PGD-1 to show the attack's steps add none), the largest batch
B="python3 -m advlab bench --shape 3x32x32 --precision bf16 --channels-last --json"
for b in 128 2048; do timeout 30 $B --model preact-resnet18 --batch-size $b --batches 2 --warmup 1 > "$OUT/mem-preact-$b.json" 2>>"$OUT/mem.log"; done
timeout 30 $B --model preact-resnet18 --batch-size 2048 --batches 2 --warmup 1 --steps 1 > "$OUT/mem-preact-2048-pgd1.json" 2>>"$OUT/mem.log"
timeout 45 $B --model wide-resnet-34-10 --batch-size 256 --batches 2 --warmup 1 > "$OUT/mem-wrn-256.json" 2>>"$OUT/mem.log"
timeout 60 $B --model preact-resnet18 --batch-size 64 --batches 1 --warmup 0 --steps 1 --largest-batch \
  --largest-batch-limit 32768 > "$OUT/largest-preact.json" 2>>"$OUT/mem.log"
timeout 90 $B --model wide-resnet-34-10 --batch-size 64 --batches 1 --warmup 0 --steps 1 --largest-batch \
  --largest-batch-limit 16384 > "$OUT/largest-wrn.json" 2>>"$OUT/mem.log"
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for f in sorted(out.glob("mem-*.json")) + sorted(out.glob("largest-*.json")):
    try:
        r = json.loads(f.read_text())
        print(f.stem, r["batch_size"], f"{r['images_per_second']:.0f} img/s", f"{r['peak_memory_mib']:.0f} MiB",
              f"mfu {100 * (r['mfu'] or 0):.1f}%", "largest", r.get("largest_batch"))
    except Exception as exc:
        print(f.stem, "failed:", exc)
PY
tail -n 5 "$OUT/mem.log" 2>/dev/null
