# The commands of the README: `make demo` runs the main job, `make test` the whole test suite (what CI runs: the
# main suite, then the timm/torchvision tests in their own environment, scripts/test_vision.sh), `make test-fast`
# the tests not marked slow (no end-to-end runs; about 1.5 minutes on 2 idle cores).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast
setup:
	@VENV=$(VENV) bash scripts/setup.sh

demo: setup
	$(PY) -m advlab train --preset demo --out runs/demo --overwrite

test: setup
	$(PY) -m pytest -q
	bash scripts/test_vision.sh

test-fast: setup
	$(PY) -m pytest -q -m "not slow"
