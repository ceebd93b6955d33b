# Relaydesk: `make run` starts everything on this machine, `make test` runs every check.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit integration bench clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "need python3.11 (or python3 >= 3.11) on PATH"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "$(PYTHON) is older than 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/relaydesk up

lint: $(STAMP)
	$(BIN)/ruff check events router connectors services tests

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/relaydesk bench decide

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
