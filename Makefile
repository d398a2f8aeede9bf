# Ferry: `make run` starts everything locally, `make test` runs the whole suite.
# Both do all set-up themselves on a fresh machine (virtualenv, pinned packages,
# the local Kubernetes control plane built from Go modules and cached).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export GOTOOLCHAIN := local

.PHONY: all venv server-venv controlplane crds check-crds lint unit integration e2e test \
        test-operator test-inference-server run cluster bench bench-operator \
        bench-platforms bench-drains bench-inference-server clean

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

controlplane:
	@hack/build-controlplane.sh >/dev/null

# The model server's own environment: the sandbox runs it for real inference.
server-venv:
	@$(MAKE) --no-print-directory -C inference-server venv

crds: venv
	$(BIN)/python -m ferry.api.crdgen crds charts/ferry/crds

lint: venv
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/ruff format --check operator tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: venv
	$(BIN)/pytest tests/unit -q

integration: venv controlplane server-venv
	$(BIN)/pytest tests/integration -q

e2e: venv controlplane server-venv
	$(BIN)/pytest tests/e2e -q

test-operator: venv controlplane server-venv lint
	$(BIN)/pytest tests -q

test-inference-server:
	$(MAKE) -C inference-server test

test: test-operator test-inference-server

# With a kubeconfig, the operator runs against that cluster: nothing local is built.
run: venv
	@if $(BIN)/python -c 'import sys; from ferry import cli; sys.exit(not cli.has_kubeconfig())'; then \
	  $(BIN)/ferry up; \
	else \
	  $(MAKE) --no-print-directory controlplane server-venv && $(BIN)/ferry up; \
	fi

cluster: venv controlplane
	$(BIN)/python -m ferry.devcluster up

bench-operator: venv controlplane
	$(BIN)/python benchmarks/bench_endpoints.py

# Remote endpoints in the sandbox: steady-state calls (D4), apply -> platform latency, RSS.
bench-platforms: venv controlplane
	$(BIN)/python benchmarks/bench_platforms.py $(BENCH_ARGS)

# Drains and rollouts with 1,000 requests in flight and a load step, against cordon+evict.
bench-drains: venv controlplane server-venv
	$(BIN)/python benchmarks/bench_drains.py $(BENCH_ARGS)

bench-inference-server:
	$(MAKE) -C inference-server bench

bench: bench-operator bench-platforms bench-inference-server

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
