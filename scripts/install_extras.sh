#!/usr/bin/env bash
# advlab's optional extras for models from elsewhere, installed WITHOUT replacing the torch build already there
# (called by scripts/setup.sh, so `make test` has them; usable alone: bash scripts/install_extras.sh .venv/bin/python).
#
# - safetensors (init.from / --weights FILE.safetensors), constrained to the installed torch;
# - timm (model.name=timm:<name>) only where torchvision imports: every timm release imports torchvision when it
#   is imported, and timm's wheel requires it, so a plain `pip install timm` pulls a torchvision that pulls
#   another torch (tried: torch 2.14.1 with CUDA libraries over the 2.13.0 CPU build). timm goes in with
#   --no-deps (its other dependencies, PyYAML and safetensors, are installed; huggingface_hub is optional to it
#   and only downloads, which advlab never asks for).
#
# torch's version and build (torch.__version__, torch.version.cuda) are read before and after: a change fails.
set -euo pipefail
PY="${1:-.venv/bin/python}"
PIP=("$PY" -m pip --disable-pip-version-check -q)
torch_build() { "$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)'; }

before="$(torch_build)"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$PY" -m pip freeze 2>/dev/null | grep -iE '^(torch|torchvision)==' >"$constraints" || true

echo "[extras] safetensors (torch kept at: $before)"
"${PIP[@]}" install -c "$constraints" "safetensors>=0.4"
if why="$("$PY" -c 'import torchvision' 2>&1)"; then
  echo "[extras] timm (--no-deps: torchvision is already here)"
  "${PIP[@]}" install -c "$constraints" "PyYAML>=6"
  "${PIP[@]}" install -c "$constraints" --no-deps "timm>=1.0"
else
  echo "[extras] timm not installed: it imports torchvision, which does not import beside this torch" \
       "($(printf '%s' "$why" | tail -n 1)); the timm and torchvision tests are skipped. docs/MODELS.md says how" \
       "to install a matching pair."
fi

after="$(torch_build)"
if [ "$before" != "$after" ]; then
  echo "[extras] error: installing the extras changed torch from '$before' to '$after'" >&2
  exit 1
fi
echo "[extras] torch unchanged: $after"
