#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine (Python 3.11+), then
# run lint, format check, the layering contract and the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
# Debian packages first: pip builds mappy (minimap2) with the C compiler and zlib headers
if [ -x scripts/system-deps.sh ]; then scripts/system-deps.sh; fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
# pytest's exit code 5 (no tests collected) fails this script like any other failure.
.venv/bin/python -m pytest "$@"
