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
# processes of a reproduce run (`--jobs`): the reference machine's 2 cores; the report is the
# same with any number (JOBS=1 runs everything in one process)
JOBS ?= 2
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
	$(BIN)/sparsecnn reproduce --jobs $(JOBS) $(REPRODUCE_ARGS)

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q -n 2 tests

# every suite of benchmarks/ beside its peers; tables in $(BENCH_OUT) (BENCH_ARGS=--quick for
# a smoke run, --overwrite to replace an earlier run's tables)
BENCH_OUT ?= runs/bench
BENCH_ARGS ?=
bench: $(VENV)/.installed-bench
	$(BIN)/sparsecnn bench --suite all --out $(BENCH_OUT) $(BENCH_ARGS)

# Fashion-MNIST from Debian's package (four IDX files in /usr/share/datasets/fashion-mnist):
# installed when running as root with apt, else one line says how to get it; $SPARSECNN_DATA
# holding the files also counts.
FASHION_MNIST_DEB := /usr/share/datasets/fashion-mnist
FASHION_MNIST_FILES := train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \
	t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz

.PHONY: data-fashion-mnist
data-fashion-mnist:
	@for dir in "$${SPARSECNN_DATA:+$$SPARSECNN_DATA/fashion-mnist}" "$(FASHION_MNIST_DEB)"; do \
	  [ -n "$$dir" ] || continue; found=yes; \
	  for f in $(FASHION_MNIST_FILES); do [ -f "$$dir/$$f" ] || found=no; done; \
	  if [ $$found = yes ]; then echo "Fashion-MNIST: $$dir"; exit 0; fi; \
	done; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get install -y dataset-fashion-mnist || { apt-get update && \
	    apt-get install -y dataset-fashion-mnist; }; \
	else \
	  echo "Fashion-MNIST not found: apt-get install dataset-fashion-mnist (as root), or put the four IDX files ($(FASHION_MNIST_FILES)) in \$$SPARSECNN_DATA/fashion-mnist" >&2; \
	  exit 1; \
	fi

# The whole study on Fashion-MNIST (<= 90 min on 2 cores): re-running the same target after an
# interruption resumes it from the finished study x seed units in runs/fashion-mnist.jobs/.
FASHION_MNIST_OUT ?= runs/fashion-mnist
.PHONY: reproduce-fashion-mnist
reproduce-fashion-mnist: $(VENV)/.installed data-fashion-mnist
	$(BIN)/sparsecnn reproduce --data fashion-mnist --jobs $(JOBS) --out $(FASHION_MNIST_OUT) \
	  $(REPRODUCE_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info
