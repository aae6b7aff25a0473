#!/usr/bin/env bash
# One-time set-up shared by `make demo` and `make test`: a virtual environment with advlab
# installed, PyTorch pinned to the CPU build when none is present, and Fashion-MNIST.
set -euo pipefail
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] creating $VENV (reusing the torch already installed for $PYTHON)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    echo "[setup] creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  # A bare `torch` requirement would pull a multi-GB CUDA build: pin the CPU build first.
  echo "[setup] installing torch==2.13.0"
  "${PIP[@]}" install torch==2.13.0
fi

stamp="$VENV/.advlab-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing advlab and its dependencies"
  "${PIP[@]}" install -e ".[test]"
  # the optional extras the tests use (safetensors; timm where torchvision imports), torch's build kept: the
  # script compares torch's version and build before and after and fails the set-up if they changed
  bash scripts/install_extras.sh "$VENV/bin/python"
  touch "$stamp"
fi

fmnist=/usr/share/datasets/fashion-mnist
have_data() {
  for d in "${ADVLAB_DATA:-}" "$HOME/.cache/advlab" "$fmnist"; do
    [ -n "$d" ] || continue
    for sub in "" fashion-mnist; do
      [ -e "$d/$sub/train-images-idx3-ubyte.gz" ] || [ -e "$d/$sub/train-images-idx3-ubyte" ] && return 0
    done
  done
  return 1
}
if ! have_data; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "[setup] Fashion-MNIST not found. Install it with 'sudo apt-get install dataset-fashion-mnist'," >&2
    echo "        or put the four IDX files in \$ADVLAB_DATA/fashion-mnist, or use download=True." >&2
  fi
fi
