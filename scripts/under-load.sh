#!/usr/bin/env bash
# Run the e2e tests that hold the races a busy manager node meets (arrival, crash
# recovery, generations) several rounds in a row with every core taken by a busy
# process (pytest --cpu-hogs). Issue 28: a test that fails only under load is a race a
# user will hit. Usage: scripts/under-load.sh [ROUNDS (3)] [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
hogs=$(nproc)
for round in $(seq 1 "$rounds"); do
    echo "== round $round of $rounds, $hogs busy process(es) =="
    .venv/bin/python -m pytest -q --cpu-hogs "$hogs" \
        tests/e2e/test_arrival.py tests/e2e/test_crash_recovery.py \
        tests/e2e/test_generations.py "$@"
done
echo "all $rounds round(s) passed under load"
