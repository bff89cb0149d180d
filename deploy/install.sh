#!/usr/bin/env bash
# crackd on-device installer: Raspberry Pi OS (Bookworm, Trixie) or Debian, run as root.
#
#   sudo bash deploy/install.sh                  # install or upgrade (idempotent: run it again any time)
#   sudo bash deploy/install.sh --uninstall      # remove program and service, keep data, config and user
#   sudo bash deploy/install.sh --uninstall --purge   # ... and delete data, config and the crackd user
#
# `crack-deploy install HOST` copies the source tree to the device and runs this.
#
# What it does:
#   1. apt: python3-venv, python3-picamera2 (libcamera bindings exist only as OS packages), python3-systemd
#   2. a system user `crackd` in group `video` (camera devices)
#   3. a virtual environment in /opt/crackd/venv that sees the OS packages (--system-site-packages),
#      with numpy pinned to the OS's numpy so picamera2 keeps working, and a TFLite runtime chosen by
#      deploy/runtime_choice.sh: ai-edge-litert where it has wheels (64-bit), else tflite-runtime (32-bit,
#      numpy < 2, Python <= 3.11). The runtime must pass the default bundle's golden self-test on this
#      machine; if the first fails it (or fails to install) the other is installed instead, and the log says so.
#   4. the shipped default bundle as the first release: /var/lib/crackd/models/releases/<v> and
#      models/current, checked on this device by `crackd models stage` (models load, golden samples)
#   5. /etc/crackd/crackd.yaml from config/crackd.example.yaml, only if there is none
#   6. systemd/crackd.service, enabled and (re)started
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
SOURCE=$(cd -- "$SCRIPT_DIR/.." && pwd)
PREFIX=/opt/crackd
STATE_DIR=/var/lib/crackd
CONFIG_DIR=/etc/crackd
UNIT_DIR=/etc/systemd/system
SERVICE_USER=crackd
PYTHON=python3
RUNTIME=auto
ALLOWED_SIGNERS=""
USE_APT=1
START=1
UNINSTALL=0
PURGE=0

log() { printf 'crackd install: %s\n' "$*"; }
die() { printf 'crackd install: ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    cat <<EOF
usage: install.sh [options]
  --source DIR            crackd source tree to install (default: $SOURCE)
  --prefix DIR            program directory (default: $PREFIX; the venv is DIR/venv)
  --state-dir DIR         data: journal, snapshots, models (default: $STATE_DIR)
  --config-dir DIR        configuration (default: $CONFIG_DIR)
  --unit-dir DIR          where crackd.service goes (default: $UNIT_DIR)
  --user NAME             service user (default: $SERVICE_USER)
  --python CMD            Python to build the venv from (default: $PYTHON)
  --runtime NAME          auto | ai-edge-litert | tflite-runtime (default: $RUNTIME)
  --allowed-signers FILE  install FILE as CONFIG_DIR/allowed_signers (keys trusted to sign bundles)
  --no-apt                do not install OS packages (offline, or already there)
  --no-start              enable the service but do not (re)start it
  --uninstall             stop and remove the service and PREFIX; keep data, config and the user
  --purge                 with --uninstall: also delete STATE_DIR, CONFIG_DIR and the user
  -h, --help              this help
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --*=*) opt=${1%%=*}; value=${1#*=}; shift; set -- "$opt" "$value" "$@" ;;   # --opt=value -> --opt value
        --source) SOURCE=$(cd -- "${2:?--source needs a directory}" && pwd); shift 2 ;;
        --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
        --state-dir) STATE_DIR=${2:?--state-dir needs a directory}; shift 2 ;;
        --config-dir) CONFIG_DIR=${2:?--config-dir needs a directory}; shift 2 ;;
        --unit-dir) UNIT_DIR=${2:?--unit-dir needs a directory}; shift 2 ;;
        --user) SERVICE_USER=${2:?--user needs a name}; shift 2 ;;
        --python) PYTHON=${2:?--python needs a command}; shift 2 ;;
        --runtime) RUNTIME=${2:?--runtime needs a name}; shift 2 ;;
        --allowed-signers) ALLOWED_SIGNERS=${2:?--allowed-signers needs a file}; shift 2 ;;
        --no-apt) USE_APT=0; shift ;;
        --no-start) START=0; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

case "$RUNTIME" in auto|ai-edge-litert|tflite-runtime) ;; *) die "--runtime: expected auto, ai-edge-litert or tflite-runtime, got $RUNTIME" ;; esac
[ "$PURGE" = 1 ] && [ "$UNINSTALL" = 0 ] && die "--purge only goes with --uninstall"
[ "$(id -u)" = 0 ] || die "run as root (sudo bash $0 ...)"

VENV=$PREFIX/venv
CRACKD=$VENV/bin/crackd
UNIT=$UNIT_DIR/crackd.service

# systemctl only when this system was booted with systemd (not in a chroot or image build).
have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

# ------------------------------------------------------------------ uninstall

if [ "$UNINSTALL" = 1 ]; then
    if have_systemd && systemctl list-unit-files crackd.service >/dev/null 2>&1; then
        systemctl disable --now crackd.service 2>/dev/null || true
    fi
    rm -f -- "$UNIT"
    have_systemd && systemctl daemon-reload
    rm -rf -- "$PREFIX"
    log "removed the service and $PREFIX"
    if [ "$PURGE" = 1 ]; then
        rm -rf -- "$STATE_DIR" "$CONFIG_DIR"
        if id -u "$SERVICE_USER" >/dev/null 2>&1 && [ "$SERVICE_USER" != root ]; then
            userdel "$SERVICE_USER" 2>/dev/null || log "could not delete user $SERVICE_USER (still in use?)"
        fi
        log "purged $STATE_DIR, $CONFIG_DIR and user $SERVICE_USER"
    else
        log "kept $STATE_DIR (journal, snapshots, models), $CONFIG_DIR and user $SERVICE_USER (--purge deletes them)"
    fi
    exit 0
fi

# ------------------------------------------------------------------ checks

for f in pyproject.toml setup.py edge/__init__.py systemd/crackd.service config/crackd.example.yaml models/default/manifest.json; do
    [ -e "$SOURCE/$f" ] || die "$SOURCE is not a crackd source tree (no $f)"
done
[ -z "$ALLOWED_SIGNERS" ] || [ -f "$ALLOWED_SIGNERS" ] || die "--allowed-signers: no such file: $ALLOWED_SIGNERS"

# ------------------------------------------------------------------ 1. OS packages

if [ "$USE_APT" = 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    log "installing OS packages (python3-venv, python3-picamera2, python3-systemd)"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv python3-pip python3-systemd
    if apt-cache show python3-picamera2 >/dev/null 2>&1; then
        apt-get install -y -qq --no-install-recommends python3-picamera2
    else
        log "python3-picamera2 is not packaged here (not Raspberry Pi OS?): the picamera2 source will not work, opencv/folder/synthetic will"
    fi
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"
PY_VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
ARCH=$(uname -m)
log "Python $PY_VERSION on $ARCH"

# ------------------------------------------------------------------ 2. service user

if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin \
        --comment "crackd crack inspection" "$SERVICE_USER"
    log "created system user $SERVICE_USER"
fi
if getent group video >/dev/null 2>&1; then
    usermod -a -G video "$SERVICE_USER"
else
    log "no group video on this system; the camera may not be accessible to $SERVICE_USER"
fi
SERVICE_GROUP=$(id -gn "$SERVICE_USER")

# ------------------------------------------------------------------ 3. virtual environment

if [ -x "$VENV/bin/python" ] && [ "$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" != "$PY_VERSION" ]; then
    log "the venv was built for another Python; rebuilding it"
    rm -rf -- "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p -- "$PREFIX"
    "$PYTHON" -m venv --system-site-packages "$VENV"
    log "created $VENV (sees the OS's python3-picamera2)"
fi

# picamera2 and simplejpeg from apt are built against the OS's numpy: never shadow it in the venv.
CONSTRAINTS=$PREFIX/constraints.txt
: > "$CONSTRAINTS"
if SYSTEM_NUMPY=$("$PYTHON" -c 'import numpy; print(numpy.__version__)' 2>/dev/null); then
    echo "numpy==$SYSTEM_NUMPY" >> "$CONSTRAINTS"
    log "numpy pinned to the OS's $SYSTEM_NUMPY"
fi

if [ -n "${SYSTEM_NUMPY:-}" ] && [ "${SYSTEM_NUMPY%%.*}" -lt 2 ]; then
    # opencv-python-headless >= 4.12 needs numpy 2: without this pip downloads six releases to find one that fits.
    echo "opencv-python-headless<4.12" >> "$CONSTRAINTS"
fi

pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --prefer-binary --constraint "$CONSTRAINTS" "$@"; }

# The runtimes to try, best first (deploy/runtime_choice.sh says which have wheels for this ARCH and Python).
CHOICE=$(bash "$SCRIPT_DIR/runtime_choice.sh" "$ARCH" "$PY_VERSION" "$RUNTIME") || die "no TFLite runtime can be installed here (see above)"
mapfile -t CANDIDATES <<< "$CHOICE"
TFLITE_CONSTRAINTS=$PREFIX/constraints-tflite.txt
{ cat "$CONSTRAINTS"; echo "numpy<2"; } > "$TFLITE_CONSTRAINTS"

install_with() {  # runtime -> crackd installed with that runtime only (the other removed, so `auto` picks this one)
    local other=ai-edge-litert
    [ "$1" = ai-edge-litert ] && other=tflite-runtime
    "$VENV/bin/python" -m pip uninstall --quiet --yes "$other" >/dev/null 2>&1 || true
    if [ "$1" = ai-edge-litert ]; then
        log "installing crackd with ai-edge-litert (this takes a while on a Pi)"
        pip_install "${SOURCE}[edge]"
    else
        log "installing crackd with tflite-runtime (numpy < 2; about 5x slower than ai-edge-litert, see the README)"
        pip_install --constraint "$TFLITE_CONSTRAINTS" "${SOURCE}[edge-tflite]"
    fi
}

self_test() {  # runtime -> the shipped bundle passes `crackd models stage` (models load, golden samples) with it
    local scratch rc=0
    scratch=$(mktemp -d)
    "$CRACKD" models stage "$SOURCE/models/default" --state-dir "$scratch" --runtime "$1" \
        --who "install.sh self-test" > "$scratch.log" 2>&1 || rc=$?
    [ "$rc" = 0 ] || sed 's/^/    /' "$scratch.log" >&2
    rm -rf -- "$scratch" "$scratch.log"
    return "$rc"
}

installed=""
for i in "${!CANDIDATES[@]}"; do
    runtime=${CANDIDATES[$i]}
    if ! install_with "$runtime"; then
        log "pip could not install crackd with $runtime for Python $PY_VERSION on $ARCH"
    elif ! "$VENV/bin/python" -c "from edge.engine.runtime import load_interpreter_class; load_interpreter_class('$runtime')" 2>/dev/null; then
        log "$runtime was installed but does not import in $VENV"
    elif ! self_test "$runtime"; then
        log "the default bundle FAILED its golden self-test with $runtime on this machine"
    else
        installed=$runtime
        break
    fi
    next=${CANDIDATES[$((i + 1))]:-}
    [ -z "$next" ] || log "falling back to $next"
done
[ -n "$installed" ] || die "no TFLite runtime (${CANDIDATES[*]}) installed and passed the golden self-test for Python $PY_VERSION on $ARCH"
[ "$installed" = "${CANDIDATES[0]}" ] || log "NOTE: crackd runs on the fallback runtime $installed, because ${CANDIDATES[0]} failed (above)"
log "installed crackd $("$CRACKD" --version | awk '{print $2}') with $installed (golden self-test passed)"

# ------------------------------------------------------------------ 4. state directory and the default bundle

install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_GROUP" "$STATE_DIR"
if [ -e "$STATE_DIR/models/current" ]; then
    log "keeping the installed model release ($(basename "$(readlink "$STATE_DIR/models/current")"))"
else
    # `crackd models` run by root drops to the state directory's owner ($SERVICE_USER), who may not be able to read
    # the uploaded source tree (crack-deploy's mktemp -d is 0700): stage the installed package's copy of the bundle.
    SHIPPED=$("$VENV/bin/python" -c 'from edge.shipped import SHIPPED_BUNDLE; print(SHIPPED_BUNDLE)')
    BUNDLE_VERSION=$("$VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["bundle_version"])' "$SHIPPED/manifest.json")
    log "installing the default bundle $BUNDLE_VERSION (checked on this device: models load, golden samples match)"
    # The shipped default bundle is unsigned; crackd trusts it like its own code (its manifest's sha256 is pinned in
    # edge/releases/signing.py), so it is staged under the device's normal policy: no option switches signatures off.
    "$CRACKD" models stage "$SHIPPED" --state-dir "$STATE_DIR" --runtime "$installed" --who "install.sh" --source "$SHIPPED"
    "$CRACKD" models activate "$BUNDLE_VERSION" --state-dir "$STATE_DIR" --who "install.sh"
fi
chown -R "$SERVICE_USER:$SERVICE_GROUP" "$STATE_DIR"

# ------------------------------------------------------------------ 5. configuration

install -d -m 0755 "$CONFIG_DIR"
if [ -e "$CONFIG_DIR/crackd.yaml" ]; then
    log "keeping $CONFIG_DIR/crackd.yaml"
else
    install -m 0640 -o root -g "$SERVICE_GROUP" "$SOURCE/config/crackd.example.yaml" "$CONFIG_DIR/crackd.yaml"
    if [ "$STATE_DIR" != /var/lib/crackd ]; then
        sed -i "s|/var/lib/crackd|$STATE_DIR|g" "$CONFIG_DIR/crackd.yaml"
    fi
    log "wrote $CONFIG_DIR/crackd.yaml from the example: set device_id and mqtt.host there"
fi
if [ -n "$ALLOWED_SIGNERS" ]; then
    install -m 0644 "$ALLOWED_SIGNERS" "$CONFIG_DIR/allowed_signers"
    log "installed $CONFIG_DIR/allowed_signers"
elif [ ! -e "$CONFIG_DIR/allowed_signers" ]; then
    log "NOTE: no $CONFIG_DIR/allowed_signers: signed bundles are required, so deploys are refused until it lists your signing keys"
fi
"$CRACKD" check-config "$CONFIG_DIR/crackd.yaml" || log "WARNING: $CONFIG_DIR/crackd.yaml does not validate; fix it before starting"

# ------------------------------------------------------------------ 6. systemd unit

install -d "$UNIT_DIR"
if [ "$PREFIX" = /opt/crackd ] && [ "$CONFIG_DIR" = /etc/crackd ] && [ "$SERVICE_USER" = crackd ]; then
    install -m 0644 "$SOURCE/systemd/crackd.service" "$UNIT"
else
    sed -e "s|/opt/crackd/venv|$VENV|g" -e "s|/etc/crackd/crackd.yaml|$CONFIG_DIR/crackd.yaml|g" \
        -e "s|^User=crackd|User=$SERVICE_USER|" -e "s|^Group=crackd|Group=$SERVICE_GROUP|" \
        "$SOURCE/systemd/crackd.service" > "$UNIT"
    chmod 0644 "$UNIT"
fi
if have_systemd; then
    systemctl daemon-reload
    systemctl enable crackd.service >/dev/null
    if [ "$START" = 1 ]; then
        systemctl restart crackd.service
        log "crackd started: systemctl status crackd | journalctl -u crackd -f | $CRACKD status"
    else
        log "crackd enabled, not started (--no-start): systemctl start crackd"
    fi
else
    log "systemd is not running here (chroot or image build): the unit is installed and starts at the next boot once enabled"
fi
log "done"
