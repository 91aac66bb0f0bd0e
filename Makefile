# Two commands do all the set-up (each makes .venv and installs what it needs):
#   make quickstart   run the quickstart sweep on an embedded local Ray and plot it
#   make test         lint and run the whole test suite (what CI runs), on every core:
#                     integration tests on one worker, one after another
#   make test-fast    lint and run the fast tier: the unit tests of the science and the
#                     store, with no Ray, subprocess, process or server (`pytest --fast`
#                     leaves out tests marked `integration` or `slow`; tests/conftest.py
#                     fails a fast-tier test that starts one of those)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RESULTS ?= sweep-results

.PHONY: quickstart test test-fast lint

$(BIN)/warmup-sweep: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# compat: the project root goes on sys.path, so the installed packages win over a
	# folder named results/, trials/ or sweeps/ in the current directory (a notebook's,
	# a Ray worker's); the default editable finder comes after such namespace folders.
	$(BIN)/python -m pip install --quiet -e ".[dev]" --config-settings editable_mode=compat
	touch $@

quickstart: $(BIN)/warmup-sweep
	$(BIN)/warmup-sweep run quickstart --results $(RESULTS)
	$(BIN)/warmup-sweep analyze $(RESULTS)/quickstart

lint: $(BIN)/warmup-sweep
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -n auto --dist loadgroup

test-fast: lint
	$(BIN)/python -m pytest --fast -n auto
