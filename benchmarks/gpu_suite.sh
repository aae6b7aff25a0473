#!/usr/bin/env bash
# Every method benchmark in one go on a GPU machine, the comparisons running side by side.
# Usage: OUT=results_dir bash benchmarks/gpu_suite.sh   (Fashion-MNIST under $ADVLAB_DATA)
# Budgets: `standard` regime = 10,000 training images, each preset's 10 epochs, PGD-10;
# `overfitting` regime = 2,000 images, 60 epochs, step decay at 50% and 75%, PGD-10.
# Evaluation: first 1,000 test images, AutoAttack standard, best and last checkpoints.
set -u
R=${RUNS:-/tmp/bench}
OUT=${OUT:-$R/out}
L=$R/report
mkdir -p "$R" "$OUT" "$L"
T=${BUDGET_S:-500}
N=${EVAL_N:-1000}
STD="--train-size 10000 --eval-n $N --device cuda --seeds 0"
run() { local log=$1; shift; timeout "$T" "$@" > "$L/$log.out" 2> "$L/$log.log" & }

run baselines-1 python3 benchmarks/compare.py $STD --presets pgd-at trades --out $R/std --name baselines-1
run baselines-2 python3 benchmarks/compare.py $STD --presets mart fast-at --out $R/std --name baselines-2
run gairat-1 python3 benchmarks/compare.py $STD --presets gairat --out $R/std --name gairat-1
run gairat-2 python3 benchmarks/compare.py $STD --presets gair-fat --out $R/std --name gairat-2
OVF="--train-size 2000 --epochs 60 --eval-n $N --device cuda --seeds 0 --quiet"
run noilin python3 benchmarks/noilin.py $OVF --out $R/noilin
run lr-1 python3 benchmarks/label_refinement.py $OVF --presets pgd-at sglr self-adaptive --out $R/lr
run lr-2 python3 benchmarks/label_refinement.py $OVF --presets trades trades-sglr trades-self-adaptive --out $R/lr2
wait
# the combined tables reuse the finished runs (no training)
timeout 60 python3 benchmarks/compare.py $STD --presets pgd-at trades mart fast-at \
  --out $R/std --name baselines --title "Baselines on Fashion-MNIST" --md "$L/BASELINES.md" > /dev/null 2>> "$L/combine.log"
timeout 60 python3 benchmarks/compare.py $STD --presets pgd-at gairat gair-fat --out $R/std --md "$L/GAIRAT.md" \
  > /dev/null 2>> "$L/combine.log"
tar czf "$OUT/bench.tgz" -C "$R" --exclude='*.pt' . 2>/dev/null
cat "$L"/*.md $R/noilin/*.md $R/lr*/*.md 2>/dev/null
ls -la "$OUT"
