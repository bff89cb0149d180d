#!/usr/bin/env bash
# Which TFLite runtime(s) crackd installs on a machine: the preferred one first, then the fallback (one per line).
#
#   deploy/runtime_choice.sh ARCH PYTHON_VERSION [auto|ai-edge-litert|tflite-runtime]
#   deploy/runtime_choice.sh aarch64 3.11        # -> ai-edge-litert, tflite-runtime
#   deploy/runtime_choice.sh armv7l 3.13         # -> exit 1: no runtime has a wheel there
#
# ARCH is `uname -m`; PYTHON_VERSION is MAJOR.MINOR. deploy/install.sh installs the first line and
# falls back to the next when it fails to install or fails the golden self-test.
#
# ai-edge-litert (LiteRT) comes first wherever it has a wheel: it runs the INT8 models with XNNPACK,
# about 5x faster than tflite-runtime 2.14, which runs them on its builtin kernels (README, "Runtimes").
# Wheels on PyPI (checked November 2026):
#   ai-edge-litert 2.3.0   x86_64, aarch64 (manylinux_2_27); CPython 3.11-3.14; numpy >= 1.23.2
#   tflite-runtime 2.14.0  x86_64, aarch64, armv7l (manylinux_2_34); CPython 3.8-3.11; numpy < 2 (the last release)
# So 32-bit Raspberry Pi OS (armv7l) gets tflite-runtime, and only with Python 3.11 (Bookworm).
set -euo pipefail

die() { printf 'runtime_choice: %s\n' "$*" >&2; exit 1; }

[ $# -ge 2 ] && [ $# -le 3 ] || die "usage: runtime_choice.sh ARCH PYTHON_VERSION [auto|ai-edge-litert|tflite-runtime]"
ARCH=$1
PY=$2
WANT=${3:-auto}
[[ "$PY" =~ ^3\.([0-9]+)$ ]] || die "PYTHON_VERSION: expected 3.N (e.g. 3.11), got '$PY'"
MINOR=${BASH_REMATCH[1]}
(( MINOR >= 11 )) || die "Python $PY: crackd needs Python 3.11 or newer"

has_wheel() {  # runtime -> 0 when PyPI has a wheel for ARCH and Python 3.MINOR
    case "$1:$ARCH" in
        ai-edge-litert:x86_64|ai-edge-litert:amd64|ai-edge-litert:aarch64|ai-edge-litert:arm64) (( MINOR <= 14 )) ;;
        tflite-runtime:x86_64|tflite-runtime:amd64|tflite-runtime:aarch64|tflite-runtime:arm64|tflite-runtime:armv7l) (( MINOR <= 11 )) ;;
        *) return 1 ;;
    esac
}

case "$WANT" in
    auto) order=(ai-edge-litert tflite-runtime) ;;
    ai-edge-litert|tflite-runtime) order=("$WANT") ;;   # asked for by name: that one only
    *) die "runtime: expected auto, ai-edge-litert or tflite-runtime, got '$WANT'" ;;
esac

found=0
for runtime in "${order[@]}"; do
    if has_wheel "$runtime"; then
        echo "$runtime"
        found=1
    fi
done
[ "$found" = 1 ] || die "no wheel of ${order[*]} for Python $PY on $ARCH (ai-edge-litert: x86_64/aarch64, Python 3.11-3.14; tflite-runtime: also armv7l, Python <= 3.11)"
