# MySetlist backend: every entry point. CI calls only these targets (.ci/run -> make test).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Python 3.12 (the Lambda runtime): from PATH, else through pyenv when it has a 3.12.
PYTHON312 ?= $(shell for p in python3.12 "$$(pyenv prefix 3.12 2>/dev/null)/bin/python3.12"; do \
	  "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)
UV_VERSION := 0.13.9
SAM_CLI_VERSION := 1.170.0

VENV := .venv
PY := $(VENV)/bin/python
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
AWS_REGION ?= us-east-1

export SAM_CLI_TELEMETRY := 0
export AWS_ACCOUNT_ID_ENDPOINT_MODE := disabled
export PYTHONDONTWRITEBYTECODE := 1
# The shared package lives in the Common layer; the tools run from the repository root.
export PYTHONPATH := $(CURDIR)/layers/common:$(CURDIR)

PORT ?= 3000
WS_PORT ?= 0
DATA ?=
SHOW ?=
ROLE ?= user

.PHONY: help venv sam-venv lint format validate test test-unit test-integration test-e2e \
        build dev token import bench clean openapi eval-fraud backtest predict bench-predictions ab-stats bench-ab

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(PY): requirements-dev.txt layers/common/requirements.txt
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found: put python3.12 on PATH (or install it with pyenv)"; exit 1; }
	rm -rf $(VENV)
	$(PYTHON312) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements-dev.txt
	@touch $(PY)

$(SAM):
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found: put python3.12 on PATH (or install it with pyenv)"; exit 1; }
	rm -rf $(SAM_VENV)
	$(PYTHON312) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(SAM_VENV)/bin/uv pip install --quiet --python $(SAM_VENV)/bin/python aws-sam-cli==$(SAM_CLI_VERSION)
	@touch $(SAM)

venv: $(PY) ## make the development environment (.venv) from requirements-dev.txt

sam-venv: $(SAM) ## make the SAM CLI environment (.venv-sam)

lint: $(PY) ## ruff (lint and format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy layers/common functions tests

format: $(PY) ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

validate: $(SAM) ## sam validate and sam validate --lint
	$(SAM) validate --region $(AWS_REGION)
	$(SAM) validate --lint

test-unit: $(PY) ## unit tests (pure logic, no network)
	$(PY) -m pytest tests/unit -q -n 2

test-integration: $(PY) ## handlers in-process with events from events/, against moto
	$(PY) -m pytest tests/integration -q -n 2 --dist loadfile

test-e2e: $(PY) ## the local stack over HTTP
	$(PY) -m pytest tests/e2e -q

test: lint validate test-unit test-integration test-e2e build ## every gate: lint, template validation, all test tiers, sam build

build: $(SAM) $(PY) ## sam build (the deployable artifact, in .aws-sam/), then check its bytecode and wheels
	PATH="$(dir $(PYTHON312)):$$PATH" $(SAM) build
	$(PY) -m tests.bench.build_check

dev: $(PY) ## the whole backend on localhost with sample data (PORT=3000; WS_PORT=0: the WebSocket API on a free port)
	$(PY) -m tests.local_stack --port $(PORT) --ws-port $(WS_PORT)

token: $(PY) ## print a token for the local stack: make token USER=<id> [ROLE=<group>] [PORT=3000]
	@# USER is also the login name in every shell: only a USER= on the command line picks the id.
	@$(PY) -m tests.local_stack.tokens --user "$(if $(filter command line,$(origin USER)),$(USER),demo-user)" --role "$(ROLE)" --port "$(PORT)"

import: $(PY) ## load setlists into the catalogue: make import DATA=file.jsonl [STACK=name]
	@test -n "$(DATA)" || { echo "usage: make import DATA=file.jsonl [STACK=stack-name]"; exit 2; }
	$(PY) -m tests.local_stack.import_setlists $(if $(STACK),--stack $(STACK),) $(DATA)

.PHONY: sizes bench-cold-start bench-cache bench-votes
BENCH_ARGS ?=
# The benches log nothing but their JSON lines; metrics go to a namespace of their own.
BENCH_ENV := POWERTOOLS_LOG_LEVEL=WARNING POWERTOOLS_METRICS_NAMESPACE=MySetlistBench POWERTOOLS_TRACE_DISABLED=true

sizes: build ## unzipped size of each function with its layers (limit 250 MB), JSON lines
	$(PY) -m tests.bench.sizes

bench-cold-start: build ## cold start of each function vs the floor: make bench-cold-start [BENCH_ARGS=--help]
	$(PY) -m tests.bench.cold_start $(BENCH_ARGS)

bench-cache: $(PY) ## cache: L1 policy vs LRU and Belady, stampede loader calls, L2 round trips (JSON lines)
	$(BENCH_ENV) $(PY) -m tests.bench.cache_policy
	$(BENCH_ENV) $(PY) -m tests.bench.cache_bench

backtest: $(PY) ## setlist predictions back-tested as setlist_baselines.py does: make backtest DATA="a.jsonl b.jsonl" (JSON lines)
	@test -n "$(DATA)" || { echo 'usage: make backtest DATA="a.jsonl b.jsonl"'; exit 2; }
	$(PY) -m tests.tools.backtest $(DATA)

predict: $(PY) ## the prediction for one show from the shows before it only: make predict DATA=file.jsonl SHOW=<show_id>
	@test -n "$(DATA)" -a -n "$(SHOW)" || { echo "usage: make predict DATA=file.jsonl SHOW=<show_id>"; exit 2; }
	$(PY) -m tests.tools.predict $(DATA) $(SHOW)

bench-predictions: build ## on-demand prediction for a show with 2,000 earlier shows (p50/p95 warm), then the PredictionsApi's cold start vs the floor (JSON lines)
	$(PY) -m tests.bench.predictions_bench
	$(PY) -m tests.bench.cold_start --only PredictionsApi $(BENCH_ARGS)

ab-stats: $(PY) ## analyse an experiment's exported counts: a JSON document on standard input, the analysis as JSON (docs/experiments.md)
	@$(PY) -m mysetlist.experiments.cli

eval-fraud: $(PY) ## suspicious-activity detectors on simulated organic voting with injected attacks: recall, false positives (JSON lines)
	$(PY) -m tests.bench.fraud_eval $(EVAL_ARGS)

bench-votes: $(PY) ## tally writes per 1k votes vs minimum, processor vs naive throughput, hottest partition at 10k votes/s (JSON lines)
	$(BENCH_ENV) $(PY) -m tests.bench.votes_bench

bench-ab: $(PY) ## A/B analysis latency with 10^3 vs 10^7 recorded interactions, same shape, side by side (JSON lines)
	$(BENCH_ENV) $(PY) -m tests.bench.ab_bench $(BENCH_ARGS)

bench: sizes bench-cold-start bench-cache bench-votes bench-predictions bench-ab ## benchmarks (never part of make test)

openapi: $(PY) ## regenerate docs/openapi from the FastAPI apps (a unit test fails when they are stale)
	$(PY) -m tests.tools.openapi

clean: ## remove environments, build output and local state
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .build .local .mypy_cache .ruff_cache .pytest_cache .hypothesis
