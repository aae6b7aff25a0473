#!/usr/bin/env bash
# The tests of timm and torchvision models (pytest marker `vision`), in a second virtual environment of their own.
#
# Why a second one: every timm release imports torchvision, and PyPI's torchvision does not import beside the CPU
# build of torch that `make test` uses (torch 2.13.0+cpu: "operator torchvision::nms does not exist"). The
# environment .venv-vision takes the matching pair this machine holds on disk (torch 2.14.1 and torchvision
# 0.29.1, a CUDA build that runs on the CPU), then advlab and its dependencies without touching that torch, then
# the optional extras through scripts/install_extras.sh, which checks torch's version and build are unchanged.
# Nothing downloads weights. Where the pair cannot be installed, the line "vision tests NOT RUN" says why.
#
#   bash scripts/test_vision.sh          # run by `make test` after the main suite
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VISION_VENV:-.venv-vision}"
PYTHON="${PYTHON:-python3}"
TORCH="${VISION_TORCH:-torch==2.14.1 torchvision==0.29.1}"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if [ ! -x "$VENV/bin/python" ] || [ ! -f "$VENV/.advlab-vision" ] || [ pyproject.toml -nt "$VENV/.advlab-vision" ]; then
  echo "[vision] creating $VENV with $TORCH"
  "$PYTHON" -m venv "$VENV"
  # shellcheck disable=SC2086
  if ! "${PIP[@]}" install $TORCH; then
    echo "[vision] vision tests NOT RUN: cannot install $TORCH here (see docs/MODELS.md)" >&2
    exit 0
  fi
  constraints="$(mktemp)"
  "$VENV/bin/python" -m pip freeze 2>/dev/null | grep -iE '^(torch|torchvision)==' >"$constraints"
  "${PIP[@]}" install -c "$constraints" -e ".[test]"
  rm -f "$constraints"
  bash scripts/install_extras.sh "$VENV/bin/python"
  touch "$VENV/.advlab-vision"
fi
"$VENV/bin/python" -c 'import torch, torchvision, timm; print("[vision] torch", torch.__version__, "torchvision",
torchvision.__version__, "timm", timm.__version__)'
"$VENV/bin/python" -m pytest -q -m vision -p no:cacheprovider tests
