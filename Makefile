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
BENCH_ARGS ?=

# Benchmark hygiene (trompt_spec.md §14): keep glibc from returning the fast backends' per-step
# buffers (<= 24 MB) to the kernel and mapping them again every step. 32 MiB as the mmap threshold
# still lets the reference's ~0.5 GB (B, P, C, D) buffers go back to the system when freed.
# OPENBLAS_CORETYPE/L2_SIZE may be set on these machines for old OpenBLAS builds; they slow numpy.
BENCH_ENV := env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE MALLOC_MMAP_THRESHOLD_=33554432 \
             MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=268435456

.PHONY: bench test lint venv toolchain clean-venv help xla-env xla-test
.DEFAULT_GOAL := help

help:
	@echo "make bench  - time every installed backend (batch 8, synthetic:small); writes results/*.json"
	@echo "make test   - run the test suite"
	@echo "make lint   - ruff"

venv: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or pass PYTHON=..."; exit 2; }
	@test -x $(PY) || $(PYTHON) -m venv $(if $(HAS_GPU),--system-site-packages) $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifeq ($(HAS_GPU),1)
	@echo "CUDA GPU found: keeping the installed CUDA torch, skipping the CPU torch pin"
	grep -v '^torch==' $(LOCK) > $(VENV)/lock-gpu.txt
	$(PY) -m pip install -q -r $(VENV)/lock-gpu.txt
else
	$(PY) -m pip install -q -r $(LOCK)
endif
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.stamp-*
	@touch $@

# System libraries some backends want, provided where we can (root + apt), otherwise explained:
# - clang: tinygrad's CPU device compiles its kernels with it (without it tinygrad reports itself
#   unusable; nothing else changes);
# - OpenBLAS: the Linux mlx-cpu wheel bundles a reference BLAS ~50x slower on these GEMMs; the mlx
#   backend loads the system OpenBLAS when present (docs/REPORT.md, MLX section).
TOOLCHAIN_PKGS := $(if $(shell command -v clang),,clang) \
                  $(if $(wildcard /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0),,libopenblas0-pthread)

toolchain:
	@pkgs="$(strip $(TOOLCHAIN_PKGS))"; [ -z "$$pkgs" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $$pkgs (apt-get): clang for tinygrad's CPU device, OpenBLAS for MLX"; \
	  (apt-get install -y -qq $$pkgs >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq $$pkgs >/dev/null 2>&1)) \
	    || echo "warning: could not install $$pkgs; tinygrad's CPU device / MLX's fast BLAS may be unavailable"; \
	else echo "note: missing $$pkgs and no root apt-get: tinygrad's CPU device / MLX's fast BLAS may be unavailable"; fi

bench: venv toolchain
	$(BENCH_ENV) $(PY) -m bench all --data synthetic:small --batch-size 8 --out results $(BENCH_ARGS)

test: venv toolchain
	$(PY) -m pytest -n 2 --dist loadgroup tests

lint: venv
	$(PY) -m ruff check .

# torch_xla needs exactly torch 2.9.0, so it gets its own virtualenv (a multi-GB download: torch
# 2.9.0 from PyPI is a CUDA build). `make xla-test` runs the torch backend's parity test on the
# CPU PJRT device there. Not part of `make test`.
XLA_VENV := .venv-xla
xla-env: $(XLA_VENV)/.stamp
$(XLA_VENV)/.stamp: pyproject.toml
	@test -x $(XLA_VENV)/bin/python || $(PYTHON) -m venv $(XLA_VENV)
	$(XLA_VENV)/bin/python -m pip install -q torch==2.9.0 torch_xla==2.9.0 numpy tqdm pytest hypothesis
	$(XLA_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

xla-test: xla-env
	PJRT_DEVICE=CPU $(XLA_VENV)/bin/python -m pytest -q -p no:xdist tests/backends/test_torch_backend.py -k xla

clean-venv:
	rm -rf $(VENV)
