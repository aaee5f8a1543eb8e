# maxent_lightning: every target uses the virtual environment in .venv (created when missing).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-all lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## Train one module on the embedded MNIST-5k (MaxEnt + IMP) and print its summary.
run: $(STAMP)
	$(PY) -m maxent_lightning $(ARGS)

## Fast test suite (what CI runs).
test: $(STAMP)
	$(PY) -m pytest -q

## Everything, slow sweeps included.
test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check maxent_lightning multirun_analysis tests

clean:
	rm -rf outputs multirun store reports/*.json
