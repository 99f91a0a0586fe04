# Inlet — the two commands: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.example.toml
INLET := $(BIN)/inlet -c $(CONFIG)
# pytest workers (pytest-xdist): one per core; every test uses its own ports, folders and database schema.
JOBS ?= auto

# The example integrations' webhook token: generated once into var/, shared by `make run` and `make demo`.
TOKEN = INLET_ALERTMANAGER_TOKEN="$${INLET_ALERTMANAGER_TOKEN:-$$(cat var/webhook.token)}" \
	INLET_DRILL_TOKEN="$${INLET_DRILL_TOKEN:-$$(cat var/webhook.token)}"

.PHONY: run demo test lint format deps clean audit

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
	@[ -s var/webhook.token ] || $(BIN)/python -c "from gateway.core.private_files import write_private as w; \
		import secrets; w('var/webhook.token', (secrets.token_urlsafe(24) + '\\n').encode(), exclusive=True)"
	@echo "inlet: in another terminal, 'make demo' fills the queue with a few emails and alerts"
	$(TOKEN) exec $(INLET) serve

## Send a few realistic emails and alerts through the intake of the Inlet that `make run` started.
demo: $(VENV)/.installed
	$(TOKEN) $(INLET) demo

## Set up and pass every test: system services, lint, then pytest on SQLite and PostgreSQL.
test: $(VENV)/.installed-test deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n $(JOBS)

## System packages and services the tests talk to (PostgreSQL, Dovecot, Chromium, Alertmanager).
deps:
	bash .ci/deps

## Check dependency floors and installed versions against known security fixes (offline; README, Security).
audit: $(VENV)/.installed
	$(BIN)/python audit/check.py

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var test-output .pytest_cache .ruff_cache *.egg-info
