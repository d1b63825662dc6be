# Strata: two commands on a fresh machine.
#   make run   installs what is missing, builds, runs the main job (configs/default.toml)
#   make test  installs what is missing, checks formatting and lints (make check), runs every test
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
# FBGEMM's CPU kernels, only for `make bench-fbgemm` (1.6.0 is the release built
# against torch 2.11; it warns that its compat table lacks 2.11 but imports and runs).
FBGEMM_VERSION := 1.6.0

# The Python interpreter with libCacheSim, for the cross-check tests and benchmarks.
export STRATA_PYTHON := $(PYTHON)
# Cargo with the DLRM model on: torch-sys asks the venv's `python` (first on PATH, as
# VIRTUAL_ENV tells it) where libtorch is, and build.rs writes that folder into the
# rpath of the binary and the tests, so nothing needs LD_LIBRARY_PATH afterwards.
TORCH_CARGO = VIRTUAL_ENV=$(TORCH_VENV) PATH="$(TORCH_VENV)/bin:$$PATH" LIBTORCH_USE_PYTORCH=1 $(CARGO)
FEATURES := --features strata/torch

.PHONY: run test check build venv torch-venv fbgemm toolchain redis bench bench-simulate bench-storage bench-gather bench-lookup bench-fbgemm calibrate clean

run: build venv
	$(STRATA) run $(CONFIG)

test: export STRATA_TORCH_VENV := $(TORCH_VENV)
test: check venv redis
	$(TORCH_CARGO) test --workspace --release $(FEATURES)

# The gates CI runs before the tests: formatting (rustfmt.toml) and clippy with every
# warning an error, over both crates, every target (tests, benches) and the model.
check: toolchain torch-venv
	$(CARGO) fmt --all -- --check
	$(TORCH_CARGO) clippy --workspace --all-targets --release $(FEATURES) -- -D warnings

build: toolchain torch-venv
	$(TORCH_CARGO) build --release $(FEATURES)

# Redis from Debian's packages, for the remote tier's tests (tests/remote.rs starts its
# own 3-master + 3-replica cluster on free loopback ports; nothing is assumed running).
# Installed only where redis-server or redis-cli is missing (these machines run as root;
# elsewhere apt-get goes through sudo).
redis:
	@if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server redis-tools; \
	fi
	@redis-server --version | head -n 1

# The Rust toolchain (rustup's stable cargo) comes with this kind of machine.
toolchain:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: Strata needs the stable Rust toolchain (rustup)" >&2; exit 1; }
	@$(CARGO) fmt --version >/dev/null 2>&1 && $(CARGO) clippy --version >/dev/null 2>&1 || rustup component add rustfmt clippy
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

fbgemm: $(TORCH_VENV)/.fbgemm-$(FBGEMM_VERSION).installed

# fbgemm-gpu-cpu into the torch venv (and numpy with it); not part of `make test`/`run`.
$(TORCH_VENV)/.fbgemm-$(FBGEMM_VERSION).installed: $(TORCH_VENV)/.installed
	$(TORCH_VENV)/bin/pip install --quiet --disable-pip-version-check fbgemm-gpu-cpu==$(FBGEMM_VERSION)
	$(TORCH_PYTHON) -W ignore -c "import logging; logging.disable(logging.WARNING); import torch, fbgemm_gpu; assert fbgemm_gpu.__version__ == '$(FBGEMM_VERSION)', fbgemm_gpu.__version__; torch.ops.fbgemm.split_embedding_codegen_lookup_rowwise_adagrad_function_cpu"
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

# This machine's hardware profile for the planner (docs/PLANNING.md).
calibrate: build
	$(STRATA) calibrate --out out/calibrate/profile.toml

bench-lookup: build
	$(STRATA) bench lookup --scale 0.01 --zipf 1.05 --device 0.02 --host 0.1 --window 4

# The embedding step (lookup + row-wise Adagrad, host memory, 1 thread) against FBGEMM's
# CPU kernels on the same batches: MLPerf tables at 1%, dim 128, batch 2048, multi-hot.
bench-fbgemm: build fbgemm
	STRATA_TORCH_PYTHON=$(TORCH_PYTHON) $(STRATA) bench embedding --scale 0.01 --zipf 1.05 --dim 128 --batch 2048

clean:
	$(CARGO) clean
	rm -rf out
