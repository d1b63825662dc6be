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

# The Python interpreter with libCacheSim, for the cross-check tests and benchmarks.
export STRATA_PYTHON := $(PYTHON)

.PHONY: run test build venv toolchain bench bench-simulate bench-storage bench-gather bench-lookup clean

run: build venv
	./target/release/strata run $(CONFIG)

test: toolchain venv
	$(CARGO) test --workspace --release

build: toolchain
	$(CARGO) build --release

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

# Criterion benches and the side-by-side comparisons (libCacheSim, fio, memcpy, all-in-host).
bench: bench-simulate bench-storage bench-gather bench-lookup
	$(CARGO) bench --bench policy_ops --bench gather

bench-simulate: build venv
	./target/release/strata bench simulate --requests 10000000 --scale 0.01 --capacity 0.01,0.1

# Storage-tier random row reads per read path against fio on a 4 GiB table file.
bench-storage: toolchain
	bash benches/storage_vs_fio.sh

bench-gather: build
	./target/release/strata bench gather

bench-lookup: build
	./target/release/strata bench lookup --scale 0.01 --zipf 1.05 --device 0.02 --host 0.1 --window 4

clean:
	$(CARGO) clean
	rm -rf out
