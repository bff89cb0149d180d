#!/usr/bin/env bash
# Set up everything the test suite needs (Debian packages when root, .venv, dev extras), then lint, type-check and
# run it. The checks come first and stop the run: they take seconds, the suite takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,systemd

check() {
  if ! "$@"; then
    echo "scripts/test.sh: stopped before the tests: \`${*#.venv/bin/}\` failed (its findings are above)" >&2
    exit 1
  fi
}
# Configured in pyproject.toml ([tool.ruff], [tool.mypy]): ruff lints and checks the formatting of the whole
# repository, mypy type-checks edge/, trainer/, deploy/ and tools/.
check .venv/bin/ruff check
check .venv/bin/ruff format --check
check .venv/bin/mypy
# Two workers, a test file each at a time (module fixtures stay in one process): most tests wait on brokers, daemons
# and sshd, so two workers finish in about 60 % of the time one takes, also on a loaded 2-core machine.
# CRACKD_TEST_WORKERS=0 runs everything in this process (for a debugger or -x).
exec .venv/bin/python -m pytest -q -n "${CRACKD_TEST_WORKERS:-2}" --dist loadfile "$@"
