#!/usr/bin/env bash
# Install memogrid with its service and test dependencies into .venv and run
# the whole test suite, in two pytest processes (pytest-xdist; `-n 0` runs
# it in one). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[service,test,dev]"
.venv/bin/ruff check service client tests benchmarks migrations
.venv/bin/mypy service client
.venv/bin/python -m pytest -n 2 --dist worksteal "$@"
