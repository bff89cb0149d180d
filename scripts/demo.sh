#!/usr/bin/env bash
# Set up the device package (no TensorFlow) and run the daemon on its built-in synthetic camera with the shipped
# models, publishing over MQTT so you can watch it.
#
#   scripts/demo.sh [--no-setup] [--mqtt-port PORT] [crackd run options, e.g. --state-dir DIR -v]
#
# The broker: the one answering on localhost:PORT (default 1883) when there is one; otherwise a private mosquitto
# on a free loopback port, started here and stopped when the demo ends. Either way the first lines say how to
# watch. Nothing else is touched: a mosquitto service you run keeps running. --no-setup skips scripts/setup.sh
# (.venv is already set up; no network needed). Ctrl-C (or SIGTERM) stops the daemon cleanly, then the broker.
set -euo pipefail
cd "$(dirname "$0")/.."

SETUP=1
PORT=1883
CRACKD_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-setup) SETUP=0; shift ;;
    --mqtt-port) PORT=${2:?--mqtt-port needs a port}; shift 2 ;;
    --mqtt-port=*) PORT=${1#*=}; shift ;;
    *) CRACKD_ARGS+=("$1"); shift ;;
  esac
done
[ "$SETUP" = 0 ] || scripts/setup.sh edge
PY=.venv/bin/python
# Job control: the broker and the daemon run in process groups of their own, so a Ctrl-C (or a signal to this
# script's group) reaches only this script, which stops the daemon once (a second signal would make it exit without
# its final flush) and the broker after it.
set -m

answers() {  # answers PORT: something accepts TCP connections on localhost:PORT
  "$PY" -c 'import socket, sys; socket.create_connection(("localhost", int(sys.argv[1])), timeout=0.5).close()' \
    "$1" 2>/dev/null
}

BROKER_PID=""
BROKER_DIR=""
CRACKD_PID=""
cleanup() {
  if [ -n "$CRACKD_PID" ] && kill -0 "$CRACKD_PID" 2>/dev/null; then
    kill -TERM "$CRACKD_PID" 2>/dev/null || true
    wait "$CRACKD_PID" 2>/dev/null || true
  fi
  if [ -n "$BROKER_PID" ]; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    echo "demo: stopped the private mosquitto on port $PORT"
  fi
  [ -z "$BROKER_DIR" ] || rm -rf -- "$BROKER_DIR"
}
trap cleanup EXIT

WATCH=1
if answers "$PORT"; then
  echo "demo: publishing to the MQTT broker on localhost:$PORT"
else
  MOSQUITTO=$(command -v mosquitto || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; } || true)
  if [ -z "$MOSQUITTO" ]; then
    echo "demo: no MQTT broker on localhost:$PORT and no mosquitto to start one (sudo apt-get install mosquitto" \
      "mosquitto-clients); events wait in the daemon's outbox until a broker answers" >&2
    WATCH=0
  else
    ASKED=$PORT
    PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    BROKER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/crackd-demo-broker.XXXXXX")
    # Its log goes through stderr into a file this shell opens: run as root, mosquitto drops to its own user, which
    # could not open a file in this private directory itself.
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n' "$PORT" \
      > "$BROKER_DIR/mosquitto.conf"
    "$MOSQUITTO" -c "$BROKER_DIR/mosquitto.conf" 2> "$BROKER_DIR/mosquitto.log" &
    BROKER_PID=$!
    for _ in $(seq 50); do answers "$PORT" && break; sleep 0.1; done
    if ! answers "$PORT"; then
      echo "demo: the private mosquitto did not start: $(tail -n 3 "$BROKER_DIR/mosquitto.log" 2>/dev/null)" >&2
      exit 1
    fi
    echo "demo: no MQTT broker answers on localhost:$ASKED, so a private mosquitto runs on 127.0.0.1:$PORT until" \
      "the demo ends"
  fi
fi
if [ "$WATCH" = 1 ]; then
  P=""; [ "$PORT" = 1883 ] || P=" -p $PORT"
  echo "demo: watch it (snapshots left out):  mosquitto_sub -h localhost$P -v -t 'crackd/#' -T 'crackd/+/snapshot'"
  echo "demo: save the latest snapshot:       mosquitto_sub -h localhost$P -C 1 -N -t crackd/demo/snapshot > snapshot.jpg"
fi
STATE=crackd-state
for ((i = 0; i < ${#CRACKD_ARGS[@]}; i++)); do
  case "${CRACKD_ARGS[$i]}" in
    --state-dir) STATE=${CRACKD_ARGS[$((i + 1))]:-$STATE} ;;
    --state-dir=*) STATE=${CRACKD_ARGS[$i]#*=} ;;
  esac
done
echo "demo: and the daemon's own view:      .venv/bin/crackd status --state-dir $STATE"

# In the background with its signals forwarded, so the broker outlives the daemon's final flush and is stopped after.
.venv/bin/crackd run --demo --mqtt-port "$PORT" "${CRACKD_ARGS[@]}" &
CRACKD_PID=$!
SIGNALLED=0
trap 'SIGNALLED=1; kill -TERM "$CRACKD_PID" 2>/dev/null || true' INT TERM
while :; do  # a forwarded signal ends `wait` early: wait again for the daemon's own exit status
  SIGNALLED=0
  rc=0
  wait "$CRACKD_PID" || rc=$?
  [ "$SIGNALLED" = 1 ] || break
done
CRACKD_PID=""
exit "$rc"
