#!/usr/bin/env bash
# Set up everything the test suite needs (Debian packages when root, .venv, dev extras), then lint, type-check and
# run it. The checks come first and stop the run: they take seconds, the suite takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,systemd

# What the checks cover (configured in pyproject.toml: [tool.ruff], [tool.mypy]).
LINT_PATHS=(
  trainer/__init__.py trainer/data trainer/models trainer/training trainer/export trainer/evaluation trainer/reports
  deploy/__init__.py deploy/push.py deploy/ssh.py
  edge/engine edge/outputs edge/events edge/layout.py edge/atomic_write.py
  tools/adapt_experiment.py tools/ha_card.py
)
RUFF_EXTRA=(--extend-ignore E501,E702)

check() {
  if ! "$@"; then
    echo "scripts/test.sh: stopped before the tests: \`${*#.venv/bin/}\` failed (its findings are above)" >&2
    exit 1
  fi
}
check .venv/bin/ruff check "${RUFF_EXTRA[@]}" "${LINT_PATHS[@]}"
check .venv/bin/mypy "${LINT_PATHS[@]}"
exec .venv/bin/python -m pytest -q "$@"
