# trompt-bench: two commands on a fresh clone.
#   make bench   train and time every installed backend at batch 8 on synthetic data
#   make test    the whole test suite
# Both bootstrap .venv (Python 3.11) from the exact pins in requirements/lock.txt, once: the
# stamp below is keyed on the pin file and pyproject.toml, so a second run installs nothing.

PYTHON   ?= python3.11
VENV     := .venv
PY       := $(VENV)/bin/python
LOCK     := requirements/lock.txt
STAMP    := $(VENV)/.stamp-$(shell cat $(LOCK) pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)
# A CUDA machine keeps the CUDA torch it has (the venv sees system packages, the torch pin is skipped).
HAS_GPU  := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
# uv, when it is on PATH, installs the same pins, faster than pip; pip is the fallback, and
# `make venv UV=` forces it. uv does not read pip's configuration (pip.conf, PIP_* variables),
# so the torch pin is still resolved by pip: `pip download` fetches whatever pip would install for
# it (on a CPU machine, e.g. a local CPU wheel reached through pip's find-links) and uv, given that
# folder as its find-links, installs it with the rest of the lock (torch==X matches X+cpu). uv does
# not precompile bytecode: the first imports write it.
UV       ?= $(shell command -v uv 2>/dev/null)
INSTALL  := $(if $(UV),$(UV) pip install -q --python $(PY),$(PY) -m pip install -q)
# The editable install builds with the venv's own setuptools (no build isolation): pyproject's
# license string needs setuptools>=77, newer than the one `python3.11 -m venv` seeds. The CPU torch
# wheel requires it too; named here so the CUDA path, which skips torch, gets it as well.
BUILD_REQ := 'setuptools>=77'
BENCH_ARGS ?=

# OPENBLAS_CORETYPE/L2_SIZE may be set on these machines for old OpenBLAS builds; they slow numpy.
# (Each backend's own allocator settings are applied per process by `bench all`: bench/run_all.py.)
BENCH_ENV := env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE

.PHONY: bench test lint venv toolchain clean-venv help xla-env xla-test device-check
.DEFAULT_GOAL := help

help:
	@echo "make bench  - time and check every installed backend (batch 8, synthetic:small); writes runs/<run id>/"
	@echo "make test   - run the test suite"
	@echo "make lint   - ruff"
	@echo "make device-check - on a CUDA GPU or TPU machine: every accelerator check (< 8 min); writes results/<device>/"

venv: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or pass PYTHON=..."; exit 2; }
	@test -x $(PY) || $(PYTHON) -m venv $(if $(HAS_GPU),--system-site-packages) $(VENV)
	@echo "installing $(LOCK) with $(if $(UV),uv ($(UV)),pip)"
	$(INSTALL) --upgrade pip
ifeq ($(HAS_GPU),1)
	@echo "CUDA GPU found: keeping the installed CUDA torch, skipping the CPU torch pin"
	grep -v '^torch==' $(LOCK) > $(VENV)/lock-gpu.txt
	$(INSTALL) -r $(VENV)/lock-gpu.txt $(BUILD_REQ)
else ifneq ($(UV),)
	rm -rf $(VENV)/torch-wheel
	$(PY) -m pip download -q --no-deps -d $(VENV)/torch-wheel "$$(grep '^torch==' $(LOCK))"
	$(INSTALL) --find-links $(VENV)/torch-wheel -r $(LOCK) $(BUILD_REQ)
	rm -rf $(VENV)/torch-wheel
else
	$(INSTALL) -r $(LOCK) $(BUILD_REQ)
endif
	# the peer model of `bench peer` without pyarrow, which it declares but never imports
	$(INSTALL) --no-deps $$(grep -o 'pytorch-frame==[0-9.]*' pyproject.toml)
	$(INSTALL) --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.stamp-*
	@touch $@

# System libraries some backends want, provided where we can (root + apt), otherwise explained:
# - clang: tinygrad's CPU device compiles its kernels with it (without it tinygrad reports itself
#   unusable; nothing else changes);
# - g++: torch's variant r5-fused compiles its C++ kernels with it at first use (`bench all` times
#   that row on the CPU);
# - OpenBLAS: the Linux mlx-cpu wheel bundles a reference BLAS ~50x slower on these GEMMs; the mlx
#   backend loads the system OpenBLAS when present (docs/REPORT.md, MLX section).
TOOLCHAIN_PKGS := $(if $(shell command -v clang),,clang) $(if $(shell command -v g++),,g++) \
                  $(if $(wildcard /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0),,libopenblas0-pthread)

toolchain:
	@pkgs="$(strip $(TOOLCHAIN_PKGS))"; [ -z "$$pkgs" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $$pkgs (apt-get): clang for tinygrad's CPU device, g++ for torch's fused kernels, OpenBLAS for MLX"; \
	  (apt-get install -y -qq $$pkgs >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq $$pkgs >/dev/null 2>&1)) \
	    || echo "warning: could not install $$pkgs; tinygrad's CPU device / torch's fused kernels / MLX's fast BLAS may be unavailable"; \
	else echo "note: missing $$pkgs and no root apt-get: tinygrad's CPU device / torch's fused kernels / MLX's fast BLAS may be unavailable"; fi

bench: venv toolchain
	$(BENCH_ENV) $(PY) -m bench all --data synthetic:small --batch-size 8 $(BENCH_ARGS)

# Every accelerator check on this machine's GPU or TPU in one run of at most 8 minutes (e.g.
# DEVICE_CHECK_ARGS="--budget-s 900 --jobs 2" changes that); exits 1 on a failed check, and 0 with one
# line on a machine with neither. bench/device_check.py lists what it runs.
DEVICE_CHECK_ARGS ?=
device-check: venv
	$(BENCH_ENV) $(PY) -m bench.device_check $(DEVICE_CHECK_ARGS)

test: venv toolchain
	$(PY) -m pytest -n 2 --dist loadgroup tests --ignore=tests/xla

lint: venv
	$(PY) -m ruff check .

# torch_xla needs exactly torch 2.9.0, so it gets its own virtualenv (a multi-GB download: torch
# 2.9.0 from PyPI is a CUDA build). `make xla-test` runs the torch backend's parity test on the
# CPU PJRT device there. Not part of `make test`.
XLA_VENV := .venv-xla
xla-env: $(XLA_VENV)/.stamp
$(XLA_VENV)/.stamp: pyproject.toml
	@test -x $(XLA_VENV)/bin/python || $(PYTHON) -m venv $(XLA_VENV)
	$(XLA_VENV)/bin/python -m pip install -q torch==2.9.0 torch_xla==2.9.0 numpy tqdm pytest hypothesis $(BUILD_REQ)
	$(XLA_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

xla-test: xla-env
	PJRT_DEVICE=CPU $(XLA_VENV)/bin/python -m pytest -q -p no:xdist tests/xla

clean-venv:
	rm -rf $(VENV)
