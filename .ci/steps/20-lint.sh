#!/usr/bin/env bash
# Lint: ruff on everything, and mypy on the client (broker/client ships py.typed), with the
# configuration in pyproject.toml and the versions the test extra pins, from the venv that
# `make test` uses (built here the same way when it is missing or stale).
set -euo pipefail
make -s .venv/.test
.venv/bin/ruff check --no-cache .
.venv/bin/mypy broker/client
