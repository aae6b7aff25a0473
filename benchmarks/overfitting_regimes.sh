#!/usr/bin/env bash
# Search for a regime where plain PGD-AT overfits robustly on Fashion-MNIST: one `pgd-at` run per candidate,
# all in parallel, no final evaluation; prints each run's best and last validation PGD-10 accuracy.
#   RUNS=/tmp/regimes DEVICE=cuda bash benchmarks/overfitting_regimes.sh
# Each candidate is a line "name|overrides"; every run also gets the common overrides in BASE.
set -u
R=${RUNS:-/tmp/regimes}; DEVICE=${DEVICE:-cuda}; T=${T:-600}; EPOCHS=${EPOCHS:-200}
BASE="--preset pgd-at --no-eval --quiet --overwrite --device $DEVICE --epochs $EPOCHS data.crop_padding=0 validation.n=300"
CANDIDATES=(
  "cnn-500-sgd01-b64|model.options.dropout=0 data.train_size=500 batch_size=64 optimizer.lr=0.01"
  "cnn-500-sgd02-b32-wd0|model.options.dropout=0 data.train_size=500 batch_size=32 optimizer.lr=0.02 optimizer.weight_decay=0"
  "cnn-500-adam|model.options.dropout=0 data.train_size=500 batch_size=64 optimizer.name=adam optimizer.lr=0.001 optimizer.weight_decay=0"
  "cnn-1000-sgd01-b32|model.options.dropout=0 data.train_size=1000 batch_size=32 optimizer.lr=0.01"
  "cnn-1000-adam|model.options.dropout=0 data.train_size=1000 batch_size=64 optimizer.name=adam optimizer.lr=0.001 optimizer.weight_decay=0"
  "wrn10x2-500-sgd05|data.train_size=500 batch_size=64 model.name=wide-resnet model.options.depth=10 model.options.widen_factor=2 optimizer.lr=0.05"
  "wrn10x2-1000-sgd05|data.train_size=1000 batch_size=64 model.name=wide-resnet model.options.depth=10 model.options.widen_factor=2 optimizer.lr=0.05"
  "preact18-1000-sgd05|data.train_size=1000 batch_size=64 model.name=preact-resnet18 optimizer.lr=0.05"
)
mkdir -p "$R"
for c in "${CANDIDATES[@]}"; do
  name=${c%%|*}; extra=${c#*|}
  # shellcheck disable=SC2086
  timeout "$T" python3 -m advlab train --out "$R/$name" $BASE $extra > "$R/$name.log" 2>&1 &
done
wait
python3 - "$R" <<'PY'
import json, pathlib, sys
for run in sorted(p for p in pathlib.Path(sys.argv[1]).iterdir() if p.is_dir()):
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()] if (run / "metrics.jsonl").exists() else []
    if not rows:
        print(f"{run.name}: no epochs"); continue
    best = max(rows, key=lambda r: r["val_robust"]); last = rows[-1]
    print(f"{run.name}: epochs {len(rows)}, best val robust {best['val_robust']:.3f} (epoch {best['epoch']}), "
          f"last {last['val_robust']:.3f}, gap {100 * (best['val_robust'] - last['val_robust']):.1f} pts, "
          f"last train acc {last['train_acc']:.3f}")
PY
