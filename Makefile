# The two commands of the README: `make demo` runs the main job, `make test` the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test
setup:
	@VENV=$(VENV) bash scripts/setup.sh

demo: setup
	$(PY) -m advlab train --preset demo --out runs/demo --overwrite

test: setup
	$(PY) -m pytest -q
