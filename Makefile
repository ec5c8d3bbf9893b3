# mdm: the two commands a new user runs are `make reproduce-table1` and `make test`.
# CPU installs (default) use constraints-cpu.txt (CPU torch 2.13.0 + exact pins).
# GPU machines: `make setup GPU=1` installs without constraints and keeps your CUDA torch.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
GPU ?=
PRESET ?= tiny
STAMP := $(VENV)/.mdm-setup-stamp
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup test lint

setup: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ -n "$(GPU)" ]; then \
	  $(PY) -m pip install -q -e '.[dev]'; \
	else \
	  $(PY) -m pip install -q -c constraints-cpu.txt -e '.[dev]' && \
	  cp mdm/compat/mdm_torchvision_shim.pth $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/; \
	fi
	@touch $(STAMP)

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check mdm evals tests benchmarks
