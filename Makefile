# Tokenpulse — `make up` runs everything on this machine, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv

.PHONY: install up test test-fast lint bench bench-gateway kafka-start kafka-stop clean

$(UV):
	@$(PYTHON) -m venv $(TOOLS)
	@$(TOOLS)/bin/pip install -q --disable-pip-version-check "uv>=0.5"

install: $(UV) ## set up .venv with every service and the dev tools (idempotent)
	@$(UV) sync --frozen --all-packages --python $(PYTHON)

up: install ## embedded mode: all services, in-process bus, embedded ClickHouse, real history
	@$(VENV)/bin/tokenpulse up

lint: install ## ruff and mypy
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check . >/dev/null || { echo "ruff format would change files: run '$(VENV)/bin/ruff format .'"; exit 1; }
	@$(VENV)/bin/mypy

test: install lint ## the whole suite; starts and stops a real Kafka broker itself
	@scripts/test.sh

test-fast: install ## unit tests only (no broker)
	@$(VENV)/bin/pytest -q tests/unit

bench: install ## benchmarks (results go to docs/benchmarks.md by hand; each writes its plot to docs/bench/NAME.png)
	@$(VENV)/bin/python -m bench.run
	@$(VENV)/bin/python -m bench.scoring
	@$(VENV)/bin/python -m bench.alerts
	@$(VENV)/bin/python -m bench.predictions
	@$(VENV)/bin/python -m bench.feeds_rest
	@$(VENV)/bin/python -m bench.feeds
	@$(VENV)/bin/python -m bench.insert
	@$(VENV)/bin/python -m bench.latency
	@$(VENV)/bin/python -m bench.market
	@$(VENV)/bin/python -m bench.embedded_universe
	@$(VENV)/bin/python -m bench.restore

bench-gateway: install ## gateway reads vs a bare FastAPI endpoint with `hey` (results to docs/benchmarks.md by hand, plot to docs/bench/gateway.png)
	@$(VENV)/bin/python -m bench.gateway

kafka-start: ## a local broker for distributed mode; prints the bootstrap address
	@scripts/kafka-local.sh start

kafka-stop:
	@scripts/kafka-local.sh stop

clean:
	rm -rf $(VENV) $(TOOLS) .tokenpulse .pytest_cache .mypy_cache .ruff_cache
