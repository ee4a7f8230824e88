# Two commands do all the set-up on a fresh machine:
#   make reproduce   creates .venv, installs sparsecnn, runs `sparsecnn reproduce`
#   make test        creates .venv, installs sparsecnn[dev,docs], runs ruff, the strict docs
#                    build and the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch 2.13.0; an open-ended torch requirement could pull a multi-GB CUDA build.
TORCH := torch==2.13.0
REPRODUCE_ARGS ?=
# Spinning OpenMP threads make small torch operations 5-20x slower on a shared 2-core machine.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: reproduce test bench install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev,docs]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[bench]' || $(BIN)/pip install --quiet sporco
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

reproduce: $(VENV)/.installed
	$(BIN)/sparsecnn reproduce $(REPRODUCE_ARGS)

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q -n 2 tests

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build src/*.egg-info
