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

# Benchmark hygiene (trompt_spec.md §14): keep glibc from returning per-step buffers to the kernel.
# OPENBLAS_CORETYPE/L2_SIZE may be set on these machines for old OpenBLAS builds; they slow numpy.
BENCH_ENV := env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE MALLOC_MMAP_THRESHOLD_=1073741824 \
             MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=268435456

.PHONY: bench test lint venv toolchain clean-venv help
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

# tinygrad's CPU device compiles kernels with clang. Provide it where we can (root + apt), or say
# what happens without it (the tinygrad backend reports itself unavailable; nothing else changes).
toolchain:
	@command -v clang >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing clang for tinygrad's CPU device (apt-get)"; \
	  (apt-get install -y -qq clang >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq clang >/dev/null 2>&1)) \
	    || echo "warning: could not install clang; tinygrad's CPU device will be unavailable"; \
	else echo "note: no clang and no root apt-get: tinygrad's CPU device will be unavailable"; fi

bench: venv toolchain
	$(BENCH_ENV) $(PY) -m bench all --data synthetic:small --batch-size 8 --out results $(BENCH_ARGS)

test: venv toolchain
	$(PY) -m pytest -n 2 --dist loadgroup tests

lint: venv
	$(PY) -m ruff check .

clean-venv:
	rm -rf $(VENV)
