#!/usr/bin/env bash
# Set up the device package (no TensorFlow) and run the daemon on its built-in synthetic camera with the shipped models.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh edge
exec .venv/bin/crackd run --demo "$@"
