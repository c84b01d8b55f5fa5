# Two commands do all the set-up on a fresh machine:
#   make demo   gp8 on the embedded SQLite engine with a simulated fleet (no MongoDB, no broker)
#   make test   lint, types and the whole test suite (starts Mosquitto if it is not running)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

# One venv, two stamps: `make demo` installs the runtime only, `make test` adds the test extras
# on top. Editing pyproject.toml re-runs both (the test stamp depends on the runtime one).
RUNTIME := $(VENV)/.installed-runtime
TESTDEPS := $(VENV)/.installed-test
# The web console's map library from npm (package.json), served by gp8 itself (docs/console.md).
CONSOLE_DEPS := node_modules/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(TESTDEPS): $(RUNTIME)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(CONSOLE_DEPS): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

demo: $(RUNTIME) $(CONSOLE_DEPS)
	$(BIN)/gp8 demo

lint: $(TESTDEPS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(TESTDEPS) $(CONSOLE_DEPS)
	bash .ci/ensure-mosquitto
	$(MAKE) lint
	$(BIN)/pytest -q -p no:cacheprovider -n 2

bench: $(TESTDEPS)
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) gp8-data .pytest_cache .mypy_cache .ruff_cache node_modules test-artifacts
