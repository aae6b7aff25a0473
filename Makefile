# The commands of the README: `make demo` runs the main job, `make test` the whole test suite (what CI runs),
# `make test-fast` the tests not marked slow (no end-to-end runs; about a minute).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast
setup:
	@VENV=$(VENV) bash scripts/setup.sh

demo: setup
	$(PY) -m advlab train --preset demo --out runs/demo --overwrite

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"
