# Inlet — the two commands: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.example.toml
INLET := $(BIN)/inlet -c $(CONFIG)

.PHONY: run test lint format deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## Set up and start Inlet on the embedded SQLite database.
run: $(VENV)/.installed
	$(INLET) db upgrade
	$(INLET) user bootstrap
	exec $(INLET) serve

## Set up and pass every test: system services, lint, then pytest on SQLite and PostgreSQL.
test: $(VENV)/.installed-test deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

## System packages and services the tests talk to (PostgreSQL, Dovecot, Chromium, Alertmanager).
deps:
	bash .ci/deps

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var test-output .pytest_cache .ruff_cache *.egg-info
