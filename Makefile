# The two commands of the README. Both create .venv and install the project first.
#   make demo   generate sample extracts and run the whole pipeline on an embedded DuckDB
#   make test   run the test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export LETHE_HOME ?= $(CURDIR)/.lethe

.PHONY: demo test install dev clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/lethe keygen
	$(BIN)/lethe generate --out $(LETHE_HOME)/landing
	$(BIN)/lethe run

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile

dev: install
	$(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf $(LETHE_HOME) dbt_project/target dbt_project/logs
