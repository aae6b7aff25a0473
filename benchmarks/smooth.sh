#!/usr/bin/env bash
# Smooth Adversarial Training (Xie et al. 2020) on Fashion-MNIST, measured with `advlab compare`.
#
# `pgd-at` through the `demo` recipe (small-cnn, PGD-2 training at eps 0.1, one-cycle schedule, 3 epochs) on the
# first 4,000 training images in batches of 32 (lr 0.05: the demo's 0.2 at batch 128, scaled linearly, so that
# 375 steps are taken), with model.activation relu, softplus, silu and gelu, seeds 0 and 1: 8 runs, one budget
# for all (a CPU budget: the machine is 2 shared cores). "best" is chosen on the validation split (200 points,
# PGD-20); best and last are evaluated on the first 500 test images with clean, PGD-20 and AutoAttack in its
# reduced `apgd-ce` version (APGD-CE alone, 100 iterations, 1 restart). A finished run (summary.json present)
# is reused; an interrupted one is resumed. JOBS runs train at once, each on THREADS torch threads (on a
# shared CPU one thread per run wastes least time waiting).
#
#   PY=/path/to/python JOBS=2 THREADS=1 bash benchmarks/smooth.sh [OUT]    # OUT defaults to runs/smooth
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${1:-runs/smooth}
ACTIVATIONS=${ACTIVATIONS:-"relu softplus silu gelu"}
SEEDS=${SEEDS:-"0 1"}
JOBS=${JOBS:-2}
export OMP_NUM_THREADS=${THREADS:-1}
BUDGET="perturbation.step_size=0.06 data.train_size=4000 batch_size=32 optimizer.lr=0.05 validation.n=200 evaluation.n=500"

one() {  # one ACTIVATION SEED: train and evaluate one run, or reuse / resume it
  local run="$OUT/$1-s$2"
  if [ -f "$run/summary.json" ]; then
    echo "reusing $run"
  elif [ -f "$run/last.pt" ]; then
    "$PY" -m advlab train --resume "$run" --quiet
  else
    # shellcheck disable=SC2086
    "$PY" -m advlab train --preset demo --out "$run" --overwrite --quiet --seed "$2" --device cpu \
      model.activation="$1" preset="pgd-at-$1" description="pgd-at, $1, benchmarks/smooth.sh budget" $BUDGET
  fi
  echo "done $run $(date -u +%H:%M:%S)"
}
export -f one
export PY OUT BUDGET
RUNS=()
for act in $ACTIVATIONS; do for seed in $SEEDS; do RUNS+=("$OUT/$act-s$seed"); done; done
for act in $ACTIVATIONS; do for seed in $SEEDS; do echo "$act $seed"; done; done \
  | xargs -P "$JOBS" -L 1 bash -c 'one "$0" "$1"'
"$PY" -m advlab compare "${RUNS[@]}" --group-by preset --out "$OUT/compare"
