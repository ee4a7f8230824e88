# Two commands do all the set-up on a fresh machine:
#   make reproduce   creates .venv, installs sparsecnn, runs `sparsecnn reproduce`
#   make test        creates .venv, installs sparsecnn[dev,docs], runs ruff, the strict docs
#                    build and the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.13.0, pinned: an open-ended requirement could pull a newer, multi-GB CUDA build.
# TORCH_INDEX says which build (tools/install_torch.py prints where it comes from and its size):
#   auto   (default) a CPU wheel already on disk in pip's find-links, else PyTorch's CPU index on
#          Linux x86_64 (about 190 MB; PyPI's wheel there is the CUDA build, about 2.5 GB), else PyPI
#   pypi   pip's configured index as it is
#   cpu, cu128, ...   PyTorch's index for that variant (a GPU machine: TORCH_INDEX=cu128)
#   URL    any index
# Besides torch, set-up downloads numpy, scipy, scikit-learn, scikit-image, matplotlib, numba,
# safetensors, tqdm and click (about 150 MB of downloads); `make test` adds pytest, hypothesis,
# ruff, mkdocs and the adversarial-robustness-toolbox (about 100 MB). The venv holds about 1.7 GB.
TORCH_VERSION := 2.13.0
TORCH_INDEX ?= auto
REPRODUCE_ARGS ?=
# Spinning OpenMP threads make small torch operations 5-20x slower on a shared 2-core machine.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: reproduce test bench install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python tools/install_torch.py $(TORCH_VERSION) $(TORCH_INDEX)
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
