#!/usr/bin/env bash
# Runs gand's test suite: installs into .venv, starts Redis/PostgreSQL if needed, makes sure
# Chromium is there for the browser tests, runs pytest.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$ROOT/deploy/services.sh"
bash "$ROOT/deploy/browser.sh"
cd "$ROOT"
# Two test processes (GAND_TEST_PROCESSES; 0 runs them all in this one): most tests spend their
# time waiting on real workers, brokers and leases, which leaves a core idle for the other. A
# file's tests stay in one process, so a module's fixture (a trained fleet of jobs) is made once.
# The slowest tests are listed at the end, so that a suite creeping past its budget shows where.
exec python -m pytest -q -n "${GAND_TEST_PROCESSES:-2}" --dist loadfile --durations=15 "$@"
