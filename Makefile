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
# The Python package (python/): built by maturin into a wheel and installed into the
# torch venv, with pytest for its tests.
MATURIN_VERSION := 1.16.0
PYTEST_VERSION := 9.2.0
WHEELS := $(or $(CARGO_TARGET_DIR),target)/wheels
# TorchRec for the Python package's side-by-side tests. Its wheel asks for the CUDA
# fbgemm-gpu, which would replace fbgemm-gpu-cpu: it is installed without its
# dependencies, and these (the ones it imports) are named here.
TORCHREC_VERSION := 1.6.1
TORCHREC_DEPS := cloudpickle==3.1.3 iopath==0.1.10 lightning-utilities==0.15.3 mypy_extensions==1.2.0 \
	portalocker==4.4.2 pyre-extensions==0.0.32 pyvers==0.2.3 tensordict==0.15.3 torchmetrics==1.0.3 \
	tqdm==4.70.1 typing-inspect==0.9.0

# The Python interpreter with libCacheSim, for the cross-check tests and benchmarks.
export STRATA_PYTHON := $(PYTHON)
# Cargo with the DLRM model on: torch-sys asks the venv's `python` (first on PATH, as
# VIRTUAL_ENV tells it) where libtorch is, and build.rs writes that folder into the
# rpath of the binary and the tests, so nothing needs LD_LIBRARY_PATH afterwards.
TORCH_CARGO_ENV = VIRTUAL_ENV=$(TORCH_VENV) PATH="$(TORCH_VENV)/bin:$$PATH" LIBTORCH_USE_PYTORCH=1
TORCH_CARGO = $(TORCH_CARGO_ENV) $(CARGO)
FEATURES := --features strata/torch

.PHONY: run test check build python python-tools torchrec venv torch-venv fbgemm toolchain redis bench bench-simulate bench-storage bench-gather bench-lookup bench-fbgemm bench-remote bench-replicas bench-remote-training soak-remote calibrate clean

run: build venv
	$(STRATA) run $(CONFIG)

test: export STRATA_TORCH_VENV := $(TORCH_VENV)
test: check venv redis python fbgemm torchrec
	$(TORCH_CARGO) test --workspace --release $(FEATURES)
	cd python/tests && $(TORCH_PYTHON) -m pytest -q -p no:cacheprovider .

# The gates CI runs before the tests: formatting (rustfmt.toml) and clippy with every
# warning an error, over both crates, every target (tests, benches) and the model.
check: toolchain torch-venv
	$(CARGO) fmt --all -- --check
	$(TORCH_CARGO) clippy --workspace --all-targets --release $(FEATURES) -- -D warnings

build: toolchain torch-venv
	$(TORCH_CARGO) build --release $(FEATURES)

# The `strata` Python package into the torch venv: cargo only rebuilds what changed, and
# the wheel is reinstalled (without touching torch or numpy) each time.
python: toolchain python-tools
	rm -f $(WHEELS)/strata-*.whl
	$(TORCH_CARGO_ENV) $(TORCH_VENV)/bin/maturin build --release --quiet -m python/Cargo.toml -o $(WHEELS)
	$(TORCH_VENV)/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps $(WHEELS)/strata-*.whl

python-tools: $(TORCH_VENV)/.python-tools-$(MATURIN_VERSION)-$(PYTEST_VERSION).installed

$(TORCH_VENV)/.python-tools-$(MATURIN_VERSION)-$(PYTEST_VERSION).installed: $(TORCH_VENV)/.installed
	$(TORCH_VENV)/bin/pip install --quiet --disable-pip-version-check maturin==$(MATURIN_VERSION) pytest==$(PYTEST_VERSION) numpy
	touch $@

torchrec: $(TORCH_VENV)/.torchrec-$(TORCHREC_VERSION).installed

$(TORCH_VENV)/.torchrec-$(TORCHREC_VERSION).installed: $(TORCH_VENV)/.fbgemm-$(FBGEMM_VERSION).installed
	$(TORCH_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps torchrec==$(TORCHREC_VERSION) $(TORCHREC_DEPS)
	$(TORCH_PYTHON) -W ignore -c "import logging; logging.disable(logging.WARNING); from torchrec import EmbeddingBagCollection, KeyedJaggedTensor"
	touch $@

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
bench: bench-simulate bench-storage bench-gather bench-lookup bench-remote bench-replicas
	$(TORCH_CARGO) bench --bench policy_ops --bench gather --bench dense_adam $(FEATURES)

# Three trace shapes: a stationary Zipf hot set, a drifting one, and scans mixed in.
bench-simulate: build venv
	$(STRATA) bench simulate --requests 10000000 --scale 0.01 --capacity 0.01,0.1 --repeat 3
	$(STRATA) bench simulate --requests 10000000 --scale 0.01 --capacity 0.01,0.1 --repeat 3 --drift-every 2000 --drift-fraction 0.05
	$(STRATA) bench simulate --requests 10000000 --scale 0.01 --capacity 0.01,0.1 --repeat 3 --scan-every 200000 --scan-length 50000

# Storage-tier random row reads per read path against fio on a 4 GiB table file.
# A local Redis Cluster (3 masters + 3 replicas on loopback) is started and torn down
# by the bench itself; `--nodes host:port` points it at an existing cluster instead.
bench-remote: build redis
	$(STRATA) bench remote --rows 100000 --dim 128 --batch 4096

bench-remote-training: build redis
	$(STRATA) bench remote-training --config configs/default.toml --setups 0,3

# 20 master kills during training and serving on a local cluster (make test runs 3).
soak-remote: redis
	STRATA_SOAK_KILLS=20 $(TORCH_CARGO) test --release $(FEATURES) --test remote_soak -- --nocapture

bench-replicas: build redis
	$(STRATA) bench replicas --config configs/replicas.toml --replicas 1,2,4

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
# Also strata.torch from Python on the same batches (the Python boundary's cost), and the
# TBE benchmark shape (configs/bench-tbe.toml: T=8, E=200k, D=128, L=8, B=4096).
bench-fbgemm: build fbgemm python
	STRATA_TORCH_PYTHON=$(TORCH_PYTHON) $(STRATA) bench embedding --scale 0.01 --zipf 1.05 --dim 128 --batch 2048
	STRATA_TORCH_PYTHON=$(TORCH_PYTHON) $(STRATA) bench embedding --tables configs/bench-tbe.toml --batch 4096

clean:
	$(CARGO) clean
	rm -rf out
