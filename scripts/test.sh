#!/usr/bin/env bash
# Set up everything the test suite needs (Debian packages when root, .venv, dev extras) and run it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,systemd
exec .venv/bin/python -m pytest -q "$@"
