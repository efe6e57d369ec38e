# The clearing core. `make run` and `make test` work on a fresh machine with only Python.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROTO_FILES := $(wildcard proto/clearing/v1/*.proto)
GEN_DIR := server

.PHONY: help venv proto proto-check lint breaking run test test-fast bench-ledger bench clean

help:
	@echo "make run           start the server (embedded PostgreSQL/Redis unless configured)"
	@echo "make test          the whole test suite against real PostgreSQL and Redis"
	@echo "make proto         regenerate the Python code from proto/"
	@echo "make proto-check   fail if the generated code is stale"
	@echo "make lint          buf lint"
	@echo "make bench-ledger  Transfer throughput vs a bare grpc.aio echo baseline"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Generated code lives in server/clearing/v1 (the `clearing.v1` package) and is committed.
proto: $(STAMP)
	$(PY) -m clearing.tools.protogen --out $(GEN_DIR)

proto-check: $(STAMP)
	$(PY) -m clearing.tools.protogen --out $(GEN_DIR) --check

lint: $(STAMP)
	cd proto && ../$(VENV)/bin/buf lint

# Compares the contract with the previous commit (or BUF_AGAINST, e.g. a release tag:
# BUF_AGAINST='../.git#tag=v1.0.0,subdir=proto').
breaking: $(STAMP)
	@if [ -n "$${BUF_AGAINST:-}" ]; then against="$$BUF_AGAINST"; \
	elif git rev-parse -q --verify HEAD~1 >/dev/null; then against="../.git#ref=HEAD~1,subdir=proto"; \
	else echo "buf breaking: no previous commit to compare with"; exit 0; fi; \
	echo "buf breaking --against $$against"; \
	cd proto && ../$(VENV)/bin/buf breaking --against "$$against"

run: $(STAMP)
	$(PY) -m clearing.cli serve --dev

test: $(STAMP) proto-check lint
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench-ledger: $(STAMP)
	$(PY) -m bench.ledger_bench

clean:
	rm -rf $(VENV) build *.egg-info server/*.egg-info
