# The clearing core. `make run` works on a fresh machine with only Python; `make venv` and
# `make test` also need Node 20+ and npm (the Node client, clients/node).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROTO_FILES := $(wildcard proto/clearing/v1/*.proto)
GEN_DIR := server
CLIENT_GEN_DIR := clients/python
# The Node client: its packages (`npm ci` from the committed lock file) and generated code.
NODE_DIR := clients/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
BUF := $(abspath $(VENV)/bin/buf)

.PHONY: help venv node proto proto-check lint breaking run demo test test-fast bench-ledger bench bench-events bench-lock bench-unary bench-pods bench-recon bench-partitions bench-backtest bench-reports loadtest mutation console-screenshots clean

help:
	@echo "make run           start the server (embedded PostgreSQL/Redis unless configured)"
	@echo "make demo          the seed's B2B example end to end, against the server make run started"
	@echo "make test          the whole test suite against real PostgreSQL and Redis"
	@echo "make proto         regenerate the Python and Node code from proto/"
	@echo "make proto-check   fail if the generated code is stale"
	@echo "make lint          buf lint"
	@echo "make bench         the ceiling driver's standard suite (~10 min; BENCH_QUICK=1: ~4 min), then bench-backtest"
	@echo "                   -> bench/results/<UTC>/results.json, report.html"
	@echo "make loadtest      the sale-day Locust scenario, headless (LOADTEST_ARGS='--rate 300')"
	@echo "make bench-events  event lag at 3,800 splits/s and the outbox's cost on SplitBatch"
	@echo "                   (EVENTS_BENCH_ARGS='--duration 10'; also run by make bench)"
	@echo "make bench-ledger  Transfer throughput vs a bare grpc.aio echo baseline"
	@echo "make bench-lock    the split writer's custodial row lock: old order vs lock late (~2 min)"
	@echo "make bench-unary   unary Split call by call vs grouped, against the echo (~5 min)"
	@echo "make bench-pods    SplitBatch splits/s with one PostgreSQL pod vs two (~2 min)"
	@echo "make bench-recon   a day's statement (LINES=2000000) imported and reconciled vs a bare COPY"
	@echo "make bench-partitions  the journal partitioned by month vs as it is, 12M rows (~5 min;"
	@echo "                   PARTITIONS_ARGS='--months 30 --rows-per-month 1000000')"
	@echo "make bench-backtest SimulateRuleSet over ORDERS=1000000 recorded orders vs the bare read"
	@echo "make bench-reports split summary of 2,000,000 splits a day and of a month of roll-ups,"
	@echo "                   beside the raw aggregate query (BENCH_ARGS='--splits 20000')"
	@echo "make console-screenshots  refresh docs/console-*.png (the README's) from the browser test"
	@echo "make mutation      mutmut on money, evaluator, writer, verifier, payout rules; the score"
	@echo "                   (MUTATION_ARGS='money evaluate --survivors')"

# The client SDK (clients/python, package clearing_client) is a package of its own: the
# `clearing` command's client commands use it.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -e clients/python -e '.[dev]'
	touch $(STAMP)

# clients/node's packages, installed once per change of its lock file.
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

node: $(NODE_STAMP)

venv: $(STAMP) $(NODE_STAMP)

# Generated code lives in server/clearing/v1 (the `clearing.v1` package) and, for the client
# SDK, in clients/python/clearing_client/v1 (`clearing_client.v1`); both are committed. The
# Node client's, in clients/node/gen, is made by buf with protoc-gen-es from node_modules
# (clients/node/buf.gen.yaml) and committed too.
proto: $(STAMP) $(NODE_STAMP)
	$(PY) -m clearing.tools.protogen --out $(GEN_DIR) --client-out $(CLIENT_GEN_DIR)
	cd $(NODE_DIR) && $(BUF) generate

proto-check: $(STAMP) $(NODE_STAMP)
	$(PY) -m clearing.tools.protogen --out $(GEN_DIR) --client-out $(CLIENT_GEN_DIR) --check
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && cd $(NODE_DIR) && \
	$(BUF) generate -o "$$tmp" && if diff -r gen "$$tmp/gen" >/dev/null; then \
	  echo "Node generated code is up to date"; else diff -rq gen "$$tmp/gen"; \
	  echo "Node generated code is stale; run \`make proto\` and commit" >&2; exit 1; fi

lint: $(STAMP)
	cd proto && ../$(VENV)/bin/buf lint

# Compares the contract with the previous commit (or BUF_AGAINST, e.g. a release tag:
# BUF_AGAINST='../.git#tag=v1.0.0,subdir=proto'), by proto/buf.yaml (FILE). A baseline from
# before the rule-set model moved from split.proto to rule_set.proto (it has no
# clearing/v1/rule_set.proto) is compared by proto/buf.breaking-rule-set-move.yaml: FILE, but
# messages and enums may leave split.proto if they stay in the package (docs/contract.md,
# "Breaking changes"). Remove that branch once no baseline predates the move.
breaking: $(STAMP)
	@if [ -n "$${BUF_AGAINST:-}" ]; then against="$$BUF_AGAINST"; \
	elif git rev-parse -q --verify HEAD~1 >/dev/null; then against="../.git#ref=HEAD~1,subdir=proto"; \
	else echo "buf breaking: no previous commit to compare with"; exit 0; fi; \
	cd proto || exit 1; config=""; \
	files=$$(../$(VENV)/bin/buf ls-files "$$against") || exit 1; \
	if ! printf '%s\n' "$$files" | grep -q 'clearing/v1/rule_set\.proto$$'; then \
	  config="buf.breaking-rule-set-move.yaml"; \
	  echo "buf breaking: the baseline predates rule_set.proto: config $$config"; fi; \
	echo "buf breaking --against $$against"; \
	../$(VENV)/bin/buf breaking --against "$$against" $${config:+--config "$$config"}

run: $(STAMP)
	$(PY) -m clearing.cli serve --dev

# The seed's B2B example end to end (clearing.dev.demo), against the server `make run`
# started: it reads var/admin.key, var/admin-approver.key and var/grpc.addr. Rerunnable.
demo: $(STAMP)
	$(PY) -m clearing.dev.demo

# Two pytest-xdist workers, a test file each at a time (--dist loadfile keeps a module's
# fixtures in one process; each worker has its own database, Redis prefix and server).
# A temporary folder of the run's own: under root, the embedded PostgreSQL's initdb runs as
# the `pgserver` user and needs to traverse it, and any pytest started meanwhile makes the
# shared /tmp/pytest-of-<user> private again.
TEST_WORKERS ?= 2
PYTEST := tmp=$$(mktemp -d -t clearing-tests-XXXXXX); $(PY) -m pytest -q -n $(TEST_WORKERS) \
	--dist loadfile --durations=15 --basetemp=$$tmp/t

test: $(STAMP) $(NODE_STAMP) proto-check lint
	$(PYTEST); rc=$$?; rm -rf $$tmp; exit $$rc

test-fast: $(STAMP) $(NODE_STAMP)
	$(PYTEST) -m "not slow"; rc=$$?; rm -rf $$tmp; exit $$rc

# The README's two console screenshots, taken by the browser test (Debian's chromium).
console-screenshots: $(STAMP)
	CLEARING_CONSOLE_SCREENSHOTS=$(abspath docs) $(PY) -m pytest -q -p no:xdist \
		tests/integration/test_console_browser.py -k voucher

# Load and benchmark harness (bench/README.md). Extra options: BENCH_ARGS / LOADTEST_ARGS.
# The ceiling driver, then the backtest of ORDERS recorded orders (issue 13: `make bench`
# reports it; `make bench-backtest` alone).
bench: $(STAMP)
	$(PY) -m bench.driver $(BENCH_ARGS)
	$(PY) -m bench.backtest --orders $(ORDERS)
	$(PY) -m bench.events_bench $(EVENTS_BENCH_ARGS)

# Events (issue 18): the outbox's cost on SplitBatch throughput (outbox off vs on, same run)
# and the event lag, commit to WatchEvents, at 3,800 splits/s (bench/events_bench.py).
bench-events: $(STAMP)
	$(PY) -m bench.events_bench $(EVENTS_BENCH_ARGS)

loadtest: $(STAMP)
	$(PY) -m bench.loadtest $(LOADTEST_ARGS)

# The custodial row lock of the split writer, old order vs lock late, same run
# (bench/lock_bench.py; LOCK_ARGS='--rounds 2 --duration 8').
bench-lock: $(STAMP)
	$(PY) -m bench.lock_bench $(LOCK_ARGS)

# Unary Split call by call vs grouped, against the echo ceiling, same run
# (bench/unary_bench.py; UNARY_ARGS='--rounds 2 --open-duration 60').
bench-unary: $(STAMP)
	$(PY) -m bench.unary_bench $(UNARY_ARGS)

# Two PostgreSQL pods of its own: splits/s on one pod vs two, same run (PODS_ARGS).
bench-pods: $(STAMP)
	$(PY) -m bench.pods_bench $(PODS_ARGS)

# The driver's Transfer scenarios (python -m bench.ledger_bench is the same).
bench-ledger: $(STAMP)
	$(PY) -m bench.ledger_bench $(BENCH_ARGS)

# A day's statement of LINES lines (and as many splits) imported and reconciled through the
# real server, beside a bare COPY of the same file (bench/recon.py; BENCH_ARGS for the rest).
LINES ?= 2000000
bench-recon: $(STAMP)
	$(PY) -m bench.recon --lines $(LINES) $(BENCH_ARGS)

# The journal partitioned by month beside the journal as it is, same rows, one run
# (bench/journal_partitions.py; docs/scaling.md). Size and counts: PARTITIONS_ARGS.
bench-partitions: $(STAMP)
	$(PY) -m bench.journal_partitions $(PARTITIONS_ARGS)

# SimulateRuleSet over ORDERS recorded orders (COPYed as the server writes them) through the
# real server, beside the bare read of the same rows (bench/backtest.py; target < 60 s).
ORDERS ?= 1000000
bench-backtest: $(STAMP)
	$(PY) -m bench.backtest --orders $(ORDERS) $(BENCH_ARGS)

# The reports' figures: a day of --splits (2,000,000) splits and a month of roll-ups against
# the raw aggregate query, in one run (bench/reports_bench.py).
bench-reports: $(STAMP)
	$(PY) -m bench.reports_bench $(BENCH_ARGS)

# Mutation testing, one module at a time on one core (tests/mutation.py; not in CI).
mutation: $(STAMP)
	$(PY) tests/mutation.py --max-children 1 $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info server/*.egg-info clients/python/*.egg-info $(NODE_DIR)/node_modules
