# One place for the commands that README.md and .ci/run share.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
NODE_DIR := tests/compat/node

.PHONY: serve check install chromium lint typecheck test bench clean

## Run the server on its defaults (127.0.0.1:7419, data under ~/.faktory/db).
serve: $(VENV)/.installed
	$(PY) -m minifaktory

## Install everything, then lint, type-check and run the whole test suite.
check: install lint typecheck test

install: $(VENV)/.installed $(NODE_DIR)/node_modules/.installed chromium

## Debian's Chromium for the browser tests (a Playwright browser download does not work here).
chromium:
	test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error
	touch $@

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src tests benchmarks examples

typecheck: $(VENV)/.installed
	$(PY) -m mypy

test: install
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_throughput.py

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache
