#!/usr/bin/env bash
# Set up crackd in ./.venv: Debian packages (when root), a virtual environment, the package with the given extras.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh edge   or   scripts/setup.sh dev,systemd
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-edge}"
PY="${PYTHON:-python3}"

need_debs=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need_debs+=(mosquitto)
command -v mosquitto_sub >/dev/null || need_debs+=(mosquitto-clients)   # the Quick start watches events with mosquitto_sub
[ -x /usr/sbin/sshd ] || need_debs+=(openssh-server)
command -v ssh >/dev/null || need_debs+=(openssh-client)
command -v rsync >/dev/null || need_debs+=(rsync)
case ",$EXTRAS," in  # the tests read the metrics textfile with a real node_exporter
  *,dev,*) [ -x /usr/bin/prometheus-node-exporter ] || need_debs+=(prometheus-node-exporter) ;;
esac
command -v openssl >/dev/null || need_debs+=(openssl)
command -v pkg-config >/dev/null || need_debs+=(pkg-config)
[ -e /usr/include/systemd/sd-daemon.h ] || need_debs+=(libsystemd-dev)
"$PY" -c "import venv, ensurepip" 2>/dev/null || need_debs+=(python3-venv)
if [ ${#need_debs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${need_debs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_debs[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (${need_debs[*]}); install them with: sudo apt-get install ${need_debs[*]}" >&2
  fi
fi
# Services are left as they are: the tests start their own mosquitto, sshd and node_exporter on free loopback
# ports, and scripts/demo.sh uses a broker already answering on localhost:1883 (or starts a private one).

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
