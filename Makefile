# Ferry: `make run` starts everything locally, `make test` runs the whole suite.
# Both do all set-up themselves on a fresh machine (virtualenv, pinned packages,
# the local Kubernetes control plane built from Go modules and cached).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export GOTOOLCHAIN := local

.PHONY: all venv controlplane crds check-crds lint unit integration e2e test test-operator \
        test-inference-server run cluster bench bench-operator bench-inference-server clean

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

controlplane:
	@hack/build-controlplane.sh >/dev/null

crds: venv
	$(BIN)/python -m ferry.api.crdgen crds charts/ferry/crds

lint: venv
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/ruff format --check operator tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: venv
	$(BIN)/pytest tests/unit -q

integration: venv controlplane
	$(BIN)/pytest tests/integration -q

e2e: venv controlplane
	$(BIN)/pytest tests/e2e -q

test-operator: venv controlplane lint
	$(BIN)/pytest tests -q

test-inference-server:
	$(MAKE) -C inference-server test

test: test-operator test-inference-server

run: venv controlplane
	$(BIN)/ferry up

cluster: venv controlplane
	$(BIN)/python -m ferry.devcluster up

bench-operator: venv controlplane
	$(BIN)/python benchmarks/bench_endpoints.py

bench-inference-server:
	$(MAKE) -C inference-server bench

bench: bench-operator bench-inference-server

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
