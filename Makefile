# mdm: the two commands a new user runs are `make reproduce-table1` and `make test`.
# CPU installs (default) use constraints-cpu.txt (CPU torch 2.13.0 + exact pins).
# GPU machines: `make setup GPU=1` installs without constraints, keeps your CUDA torch and adds DeepSpeed.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
GPU ?=
PRESET ?= tiny
# parallel runs: 2 single-thread CPU jobs for tiny; 1 launch for a GPU preset (--jobs N gives each launch its own GPUs)
JOBS ?= $(if $(filter tiny,$(PRESET)),2,1)
STAMP := $(VENV)/.mdm-setup-stamp
# the tiny preset (and the tests) never touch the hub; the paper preset loads models and streams datasets from it
# (`make prefetch PRESET=paper` fills the HF cache first; `mdm bench` checks everything before any compute)
ifeq ($(PRESET),tiny)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
endif
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup test test-numerics lint prefetch reproduce-table1 reproduce-table2 leaderboard perf regression-update

setup: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ -n "$(GPU)" ]; then \
	  $(PY) -m pip install -q -e '.[dev,deepspeed]'; \
	else \
	  $(PY) -m pip install -q -c constraints-cpu.txt -e '.[dev]' && \
	  cp mdm/compat/mdm_torchvision_shim.pth $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/; \
	fi
	@touch $(STAMP)

# Test files run on TEST_JOBS processes (pytest-xdist; one file stays in one process, so its fixtures are built
# once); the tiny models use one torch thread each. TEST_JOBS=0: one process.
TEST_JOBS ?= 2
XDIST = $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadfile)

test: setup
	$(PY) -m pytest tests $(XDIST) --durations=15 $(PYTEST_ARGS)

# The numerics-sensitive tests (marker `numerics`) under other CPU kernels, as another machine would run them:
# torch's generic (non-SIMD) kernels, then MKL's conditional-numerical-reproducibility path (tests/README.md).
test-numerics: setup
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest tests -m numerics $(XDIST) $(PYTEST_ARGS)
	MKL_CBWR=COMPATIBLE $(PY) -m pytest tests -m numerics $(XDIST) $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check mdm evals tests benchmarks
	$(VENV)/bin/python -m tests.layers  # the one-way import rule of mdm/ (layers declared in tests/layers.py)

# Download every model, tokenizer, dataset, image tokenizer and CLIP weight both tables load under PRESET into the HF
# cache (run online, before the GPU job; the tiny preset loads nothing).
prefetch: setup
	$(VENV)/bin/mdm prefetch benchmarks/table1.yaml benchmarks/table2.yaml --preset $(PRESET)

# Reproduce a table: train every run of the spec that is not done yet (resumable), then write the report.
# Table 1 on the tiny preset also profiles the variance of its arith base (the claims page's variance rows; the
# paper's pilot sizes; skipped when its record is there).
PROFILE := results/runs/table1/profile
# a preset's records folder (mdm.bench.spec.records_root): tiny's is results/runs/<bench>, preset P's <bench>@P
AT := $(if $(filter tiny,$(PRESET)),,@$(PRESET))
# The README's generated status block follows the tiny preset's records only.
README_STATUS := $(if $(filter tiny,$(PRESET)),--readme README.md,)
reproduce-table1: setup
	$(VENV)/bin/mdm bench benchmarks/table1.yaml --preset $(PRESET) --jobs $(JOBS)
	@if [ "$(PRESET)" = tiny ] && [ ! -f $(PROFILE)/variance.json ]; then \
	  $(VENV)/bin/mdm variance --config benchmarks/variance_tiny.yaml --methods standard,mirror,ppots,ppots+mirror \
	    --a 15 --b 70 --c 15 --out $(PROFILE); fi
	$(VENV)/bin/mdm report results/runs/table1$(AT) --out results/table1$(AT) $(README_STATUS)

reproduce-table2: setup
	$(VENV)/bin/mdm bench benchmarks/table2.yaml --preset $(PRESET) --jobs $(JOBS)
	$(VENV)/bin/mdm report results/runs/table2$(AT) --out results/table2$(AT) $(README_STATUS)

# The performance page: runs every benchmarks/perf script (1 CPU thread, < 20 min on 2 cores), then writes
# results/perf/README.md (one table: measured | baseline | ratio | target | met? | machine | command) and its plots.
perf: setup
	$(PY) benchmarks/perf/report.py --run --out results/perf

# Re-pin the CI regression's reference trajectories (only after a deliberate change of numbers).
regression-update: setup
	$(PY) -m mdm.regression --update

# Regenerate every report from the records already on disk (no training).
leaderboard: setup
	@for d in results/runs/*/; do b=$$(basename $$d); $(VENV)/bin/mdm report $$d --out results/$$b --readme README.md; done
