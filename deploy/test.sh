#!/usr/bin/env bash
# Runs gand's test suite: installs into .venv, starts Redis/PostgreSQL if needed, makes sure
# Chromium is there for the browser tests, runs pytest.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$ROOT/deploy/services.sh"
bash "$ROOT/deploy/browser.sh"
cd "$ROOT"
# The slowest tests are listed at the end, so that a suite creeping past its budget shows where.
exec python -m pytest -q --durations=15 "$@"
