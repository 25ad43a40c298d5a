# The two README commands are `make app` and `make test`; each installs what it needs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, pinned to the CPU wheel these machines carry; override e.g. TORCH='torch>=2.4'.
TORCH ?= torch==2.13.0

.PHONY: install browser app demo test test-fast lint fix bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,hf]"
	touch $@

install: $(VENV)/.installed

## Browser tests drive Debian's Chromium through the Python playwright package (a dev extra).
## Installs the `chromium` apt package when /usr/bin/chromium is missing (as root, or with sudo).
## Never `playwright install`: it downloads its own browser and fails on these machines.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then \
	  echo "browser: $(CHROMIUM) present"; \
	else \
	  echo "browser: $(CHROMIUM) missing; installing Debian's chromium with apt-get"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "ERROR: $(CHROMIUM) is missing and installing it needs root or sudo (apt-get install chromium)" >&2; exit 1; fi; \
	  command -v apt-get >/dev/null 2>&1 || { echo "ERROR: $(CHROMIUM) is missing and apt-get is not available; install Chromium at $(CHROMIUM)" >&2; exit 1; }; \
	  $$SUDO apt-get update && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || \
	    { echo "ERROR: apt-get install chromium failed; browser tests cannot run" >&2; exit 1; }; \
	  [ -x $(CHROMIUM) ] || { echo "ERROR: $(CHROMIUM) still missing after apt-get install chromium" >&2; exit 1; }; \
	fi

## Start the Streamlit app on http://127.0.0.1:8501: it asks nothing and prints the URL, so it also runs with
## no terminal or in the background (workbench app --open opens a browser; --address 0.0.0.0 serves a network).
app: install
	$(BIN)/workbench app

## The command-line demo: teacher vs scratch vs distilled student, printed as a table.
demo: install
	$(BIN)/workbench demo

## Run every test: unit, engine, notebooks and browser tests (a missing browser fails them).
## Two worker processes (pytest-xdist), each test file on one worker: sized for a 2-core machine, where the
## browser, notebook and server tests mostly wait; TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
test: install browser lint
	$(BIN)/python -m pytest $(XDIST)

## Lint and format check (ruff, pinned in the dev extra); `make fix` applies both.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fix: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## A quick subset for the edit loop (skips slow and browser tests).
test-fast: install lint
	$(BIN)/python -m pytest -m "not slow and not browser" -x -q $(XDIST)

bench: install
	$(BIN)/python bench/engine_overhead.py
	$(BIN)/python bench/teacher_cache.py
	$(BIN)/python bench/dashboard_overhead.py
	$(BIN)/python bench/text_kd_step.py
	$(BIN)/python bench/live_views.py --quick  # needs /usr/bin/chromium (make browser)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
