# Relaydesk: `make run` starts everything on this machine, `make test` runs every check.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit integration bench clean deploy-check lock

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
	$(BIN)/ruff check events router connectors services tests deploy

typecheck: $(STAMP)
	$(BIN)/mypy

# Four workers by default on any core count: a test mostly waits (for a nats-server, a subprocess,
# a deadline), and on a 2-core VM two workers took 19 minutes, four 14 (PYTEST_WORKERS=0
# runs in one process); each test file runs whole on one
# worker (--dist loadfile), with a nats-server of that worker's own.
PYTEST_WORKERS ?= 4
test: lint typecheck deploy-check
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# Compose against the compose-spec schema, deploy/k8s against the Kubernetes schemas (offline),
# the Dockerfile with hadolint, the NATS cluster config with nats-server -t.
deploy-check: $(STAMP)
	$(BIN)/python deploy/check.py

# The image's hash-pinned locks (linux x86_64, Python 3.11): run after changing pyproject's
# dependencies; add UV_FLAGS=--upgrade to move every pin to its newest allowed version.
LOCK_FLAGS := --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" $(UV_FLAGS)
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet 'uv>=0.5'
	$(BIN)/uv pip compile pyproject.toml --extra otel $(LOCK_FLAGS) -o deploy/requirements.lock
	printf 'setuptools>=68\n' | $(BIN)/uv pip compile - $(LOCK_FLAGS) -o deploy/build.lock

bench: $(STAMP)
	$(BIN)/relaydesk bench decide

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
