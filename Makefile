# The README's two commands: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CAPSEARCH := $(VENV)/bin/capsearch
WORKSPACE ?= outputs/demo
STAMP := $(VENV)/.capsearch-installed

# Quiet, offline-safe defaults for every command run from here.
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(CAPSEARCH) --workspace $(WORKSPACE) demo

# The suite on TEST_WORKERS pytest-xdist workers (tests/conftest.py: a module's tests stay on one worker, the slow
# modules start first; TEST_WORKERS=0 runs it in one process), the 25 slowest tests listed at the end. The
# ranking tests run once more under a second BLAS kernel inside it (tests/test_second_kernel.py; docs/benchmarks.md,
# "The test suite").
TEST_WORKERS ?= 3

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --durations=25

# Every benchmark end to end at small sizes (a few minutes; the GPU check in its CPU quick mode). Full sizes, the
# numbers in docs/benchmarks.md: .venv/bin/python -m bench NAME (see docs/benchmarks.md).
bench: install
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) outputs/demo data/demo
