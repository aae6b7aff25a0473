#!/usr/bin/env bash
# Every method benchmark in one go on a GPU machine: each preset trains in its own process, side by side
# (under CUDA MPS where it starts), then each comparison script reruns over the finished runs to write its table.
# Usage: ADVLAB_DATA=... OUT=results_dir bash benchmarks/gpu_suite.sh
# Regimes: standard = 10,000 training images, each preset's 10 epochs, PGD-10;
#          overfitting = benchmarks/overfitting.py's regime (500 images, no augmentation, 200 epochs, PGD-10).
# PART=standard or PART=overfitting runs one half (default: both).
# Evaluation: first $EVAL_N (1,000) test images, AutoAttack standard, best and last checkpoints, seed 0.
set -u
R=${RUNS:-/tmp/bench}
OUT=${OUT:-$R/out}
L=$R/report
mkdir -p "$R" "$OUT" "$L"
T=${BUDGET_S:-400}
N=${EVAL_N:-1000}
nvidia-cuda-mps-control -d 2>/dev/null && echo "MPS started" || echo "MPS not started"
STD="--train-size 10000 --eval-n $N --device cuda --seeds 0"
OVF="--eval-n $N --device cuda --seeds ${OVF_SEEDS:-0 1}"
PART=${PART:-all}
run() { local log=$1; shift; timeout "$T" "$@" > "$L/$log.out" 2> "$L/$log.log" & }
[ "$PART" = overfitting ] || for p in pgd-at trades mart fast-at gairat gair-fat; do
  run std-$p python3 benchmarks/compare.py $STD --presets $p --out $R/std --name std-$p
done
[ "$PART" = standard ] || for p in pgd-at noilin sglr self-adaptive trades trades-noilin trades-sglr trades-self-adaptive; do
  run ovf-$p python3 benchmarks/overfitting.py $OVF --presets $p --out $R/ovf --name ovf-$p
done
wait
# the tables, over the finished runs (no training)
[ "$PART" = overfitting ] || timeout 60 python3 benchmarks/compare.py $STD --presets pgd-at trades mart fast-at --out $R/std --name baselines \
  --title "Baselines on Fashion-MNIST" --md "$L/BASELINES.md" > /dev/null 2>> "$L/combine.log"
[ "$PART" = overfitting ] || timeout 60 python3 benchmarks/compare.py $STD --presets pgd-at gairat gair-fat --out $R/std --md "$L/GAIRAT.md" \
  > /dev/null 2>> "$L/combine.log"
[ "$PART" = standard ] || timeout 120 python3 benchmarks/overfitting.py $OVF --out $R/ovf > /dev/null 2>> "$L/combine.log"
echo quit | nvidia-cuda-mps-control 2>/dev/null
tar czf "$OUT/bench.tgz" -C "$R" --exclude='*.pt' . 2>/dev/null
cat "$L"/*.md "$R"/ovf/overfitting.md 2>/dev/null
for f in "$L"/*.log; do tail -n 3 "$f"; done
ls -la "$OUT"
