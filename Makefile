# The two README commands are `make app` and `make test`; each installs what it needs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, pinned to the CPU wheel these machines carry; override e.g. TORCH='torch>=2.4'.
TORCH ?= torch==2.13.0

.PHONY: install app demo test test-fast bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

## Start the workbench (for now: the command-line demo; the Streamlit app replaces it).
app: install
	$(BIN)/workbench demo

demo: app

## Run every test: unit, engine, notebooks and browser tests.
test: install
	$(BIN)/python -m pytest

## A quick subset for the edit loop (skips slow and browser tests).
test-fast: install
	$(BIN)/python -m pytest -m "not slow and not browser" -x -q

bench: install
	$(BIN)/python bench/engine_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
