# Strata: two commands on a fresh machine.
#   make run   installs what is missing, builds, runs the main job (configs/default.toml)
#   make test  installs what is missing, runs every test
# One-time installs live in a cache folder outside the checkout, keyed by version, so
# fresh clones and CI reuse them.

SHELL := /bin/bash
STRATA_CACHE ?= $(HOME)/.cache/strata
LIBCACHESIM_VERSION := 0.3.5
VENV := $(STRATA_CACHE)/venv-libcachesim-$(LIBCACHESIM_VERSION)
PYTHON := $(VENV)/bin/python
CARGO ?= cargo
CONFIG ?= configs/default.toml
# Where cargo puts the binary (CARGO_TARGET_DIR when set).
STRATA := $(or $(CARGO_TARGET_DIR),target)/release/strata
# PyTorch from PyPI's default index (the CUDA-enabled Linux wheel, which also runs on
# CPU); tch 0.24 links its libtorch. Keep these two versions together: the GPU machines
# carry PyTorch 2.11.
TORCH_VERSION := 2.11.0
TORCH_VENV := $(STRATA_CACHE)/venv-torch-$(TORCH_VERSION)
TORCH_PYTHON := $(TORCH_VENV)/bin/python

# The Python interpreter with libCacheSim, for the cross-check tests and benchmarks.
export STRATA_PYTHON := $(PYTHON)
# Cargo with the DLRM model on: torch-sys asks the venv's `python` (first on PATH, as
# VIRTUAL_ENV tells it) where libtorch is, and build.rs writes that folder into the
# rpath of the binary and the tests, so nothing needs LD_LIBRARY_PATH afterwards.
TORCH_CARGO = VIRTUAL_ENV=$(TORCH_VENV) PATH="$(TORCH_VENV)/bin:$$PATH" LIBTORCH_USE_PYTORCH=1 $(CARGO)
FEATURES := --features strata/torch

.PHONY: run test build venv torch-venv toolchain bench bench-simulate bench-storage bench-gather bench-lookup clean

run: build venv
	$(STRATA) run $(CONFIG)

test: toolchain venv torch-venv
	$(TORCH_CARGO) test --workspace --release $(FEATURES)

build: toolchain torch-venv
	$(TORCH_CARGO) build --release $(FEATURES)

# The Rust toolchain (rustup's stable cargo) comes with this kind of machine.
toolchain:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: Strata needs the stable Rust toolchain (rustup)" >&2; exit 1; }
	@command -v python3 >/dev/null || { echo "python3 not found: needed for the libCacheSim venv" >&2; exit 1; }

venv: $(VENV)/.installed

$(VENV)/.installed:
	mkdir -p $(STRATA_CACHE)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check libcachesim==$(LIBCACHESIM_VERSION)
	$(PYTHON) -c "import libcachesim"
	touch $@

torch-venv: $(TORCH_VENV)/.installed

# About 4.6 GB and a minute or two; done once per machine and torch version.
$(TORCH_VENV)/.installed:
	mkdir -p $(STRATA_CACHE)
	python3 -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	$(TORCH_PYTHON) -W ignore -c "import torch; assert torch.__version__.split('+')[0] == '$(TORCH_VERSION)', torch.__version__"
	touch $@

# Criterion benches and the side-by-side comparisons (libCacheSim, fio, memcpy, all-in-host).
bench: bench-simulate bench-storage bench-gather bench-lookup
	$(TORCH_CARGO) bench --bench policy_ops --bench gather $(FEATURES)

bench-simulate: build venv
	$(STRATA) bench simulate --requests 10000000 --scale 0.01 --capacity 0.01,0.1

# Storage-tier random row reads per read path against fio on a 4 GiB table file.
bench-storage: toolchain
	bash benches/storage_vs_fio.sh

bench-gather: build
	$(STRATA) bench gather

bench-lookup: build
	$(STRATA) bench lookup --scale 0.01 --zipf 1.05 --device 0.02 --host 0.1 --window 4

clean:
	$(CARGO) clean
	rm -rf out
