# Two commands do all the set-up on a fresh machine:
#   make demo   gp8 on the embedded SQLite engine with a simulated fleet (no MongoDB, no broker)
#   make test   lint, types and the whole test suite (starts Mosquitto if it is not running)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/gp8 demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(VENV)/.installed
	bash .ci/ensure-mosquitto
	$(MAKE) lint
	$(BIN)/pytest -q -p no:cacheprovider

bench: $(VENV)/.installed
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) gp8-data .pytest_cache .mypy_cache .ruff_cache
