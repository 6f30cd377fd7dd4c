#!/usr/bin/env bash
# Install memogrid with its service dependencies into .venv and start the
# service on embedded defaults: a SQLite file, an in-process dask
# LocalCluster, datasets and cache under ./data. Extra arguments go to
# `memogrid serve` (--host, --port, --data-dir, --workers, --database-url).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[service]"
exec .venv/bin/memogrid serve "$@"
