#!/usr/bin/env bash
# Install crackd in an emulated arm64 Raspberry Pi OS-like userland (Debian Bookworm) and check it works there.
#
#   sudo scripts/pi-smoke.sh [--cpu cortex-a72|cortex-a76] [--cache DIR] [--frames N] [--keep-going] [--reuse-install]
#                            [--python PY]
#
# Too slow for CI (an hour or so the first time; emulated code runs 100-150x slower than native):
# run it before a release. Needs root, an x86-64 Debian/Ubuntu host and the Debian mirror apt uses, and
# a host Python with TensorFlow for step 6's reference model (`crack-train reference-model`): --python PY
# (default: $PYTHON, else this clone's .venv/bin/python; sudo drops PYTHON, so pass --python through sudo).
#
# Steps (each reported PASS/FAIL with its duration in the summary at the end):
#   1. host packages: qemu-user-static + binfmt-support (run arm64 binaries), debootstrap, qemu-user
#      (the dynamically linked qemu-aarch64, which accepts TCG plugins), gcc (the counting plugin)
#   2. an arm64 Bookworm rootfs (debootstrap minbase + python3, venv, pip, the OS numpy that python3-picamera2
#      brings on Raspberry Pi OS, systemd for systemd-analyze), cached in --cache
#   3. deploy/install.sh --no-start inside it (apt, user, venv, pip, runtime choice + golden self-test,
#      default bundle staged and activated, config, unit); systemd-analyze verify of the installed unit
#   4. crackd check-config, crackd models status
#   5. per runtime (the installed one in /opt/crackd/venv, the other in a second venv where it has a
#      wheel): crackd models stage of the default bundle into a scratch directory (golden self-test,
#      the cross-architecture rule) and crackd infer on the bundle's golden images
#   6. guest instructions per crack frame, per frame without a crack and per reference inference
#      (INT8 MobileNetV2 1.0 @224, crack-train reference-model on the host) with each runtime
#
# Two emulation traps, handled here: LiteRT segfaults unless /proc/cpuinfo describes an arm64 CPU (a
# Raspberry Pi 4 cpuinfo is bind-mounted over it), and it computes garbage under QEMU's default CPU
# model (SME), so QEMU_CPU is set to a Pi's core (cortex-a72: Pi 4, cortex-a76: Pi 5).
# Instruction counts are repeatable (about ±1.5 %); emulated times say nothing about a Pi.
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=/var/cache/crackd-pi-smoke
CPU=cortex-a72
FRAMES=3
KEEP_GOING=0
REUSE_INSTALL=0
HOST_PYTHON=${PYTHON:-$REPO/.venv/bin/python}
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) CPU=${2:?}; shift 2 ;;
        --cache) CACHE=${2:?}; shift 2 ;;
        --frames) FRAMES=${2:?}; shift 2 ;;
        --keep-going) KEEP_GOING=1; shift ;;
        --reuse-install) REUSE_INSTALL=1; shift ;;   # keep the crackd installed in the cached rootfs by an earlier run
        --python) HOST_PYTHON=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "pi-smoke: unknown option $1" >&2; exit 2 ;;
    esac
done
# Checked first, not an hour later at step 6 (a reference model made by an earlier run is reused).
if [ ! -s "$CACHE/work/ref.tflite" ] && ! PYTHONPATH="$REPO" "$HOST_PYTHON" -c 'import tensorflow' >/dev/null 2>&1; then
    echo "pi-smoke: step 6 makes its reference model on this host with TensorFlow, and $HOST_PYTHON cannot import" \
        "tensorflow: set up the training extra (.venv/bin/pip install -e '.[train]') or give a Python that has it" \
        "with --python PY (sudo drops PYTHON=...)" >&2
    exit 2
fi
[ "$(id -u)" = 0 ] || { echo "pi-smoke: run as root" >&2; exit 2; }
[ "$(uname -m)" = x86_64 ] || { echo "pi-smoke: expects an x86-64 host" >&2; exit 2; }

ROOT=$CACHE/bookworm-arm64
WORK=$CACHE/work
LOG=$CACHE/pi-smoke.log
SUMMARY=$CACHE/summary.txt
mkdir -p "$CACHE" "$WORK"
: > "$SUMMARY"
export QEMU_CPU=$CPU

say() { printf 'pi-smoke: %s\n' "$*" | tee -a "$LOG"; }
FAILED=0
step() {  # step NAME COMMAND...: run, log, record PASS/FAIL and seconds
    local name=$1 t0 rc=0
    shift
    say "== $name"
    t0=$(date +%s)
    set +e
    ( set -e; "$@" ) >> "$LOG" 2>&1   # not in an `||` list, so errexit applies inside the step's functions
    rc=$?
    set -e
    local verdict=PASS
    [ "$rc" = 0 ] || { verdict="FAIL (exit $rc)"; FAILED=1; }
    printf '%-58s %-14s %5ss\n' "$name" "$verdict" "$(( $(date +%s) - t0 ))" | tee -a "$SUMMARY" "$LOG"
    if [ "$rc" != 0 ] && [ "$KEEP_GOING" = 0 ]; then
        say "stopping (see $LOG; --keep-going runs the remaining steps)"
        finish
    fi
    return 0
}
finish() {
    cleanup
    echo; echo "pi-smoke summary ($CPU):"; cat "$SUMMARY"
    exit "$FAILED"
}

MOUNTS=()
cleanup() {
    local i
    for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
    MOUNTS=()
}
trap cleanup EXIT
bind() { if [ -d "$1" ]; then mkdir -p "$2"; else [ -e "$2" ] || touch "$2"; fi; mount --bind "$1" "$2"; MOUNTS+=("$2"); }
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 QEMU_CPU="$CPU" TF_CPP_MIN_LOG_LEVEL=3 "$@"; }

# ------------------------------------------------------------------ 1. host packages

host_packages() {
    local need=()
    for pkg in qemu-user-static binfmt-support debootstrap qemu-user gcc; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    fi
    [ -n "$(ls /proc/sys/fs/binfmt_misc 2>/dev/null)" ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64 2>/dev/null || true
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { echo "binfmt handler for aarch64 is not registered"; return 1; }
    gcc -shared -fPIC -O2 -o "$WORK/count_insns.so" "$REPO/scripts/pi-smoke/count_insns.c"
}
step "1. host packages, binfmt, counting plugin" host_packages

# ------------------------------------------------------------------ 2. rootfs (cached)

rootfs() {
    if [ -e "$ROOT/.complete" ]; then
        echo "cached rootfs $ROOT"
        return 0
    fi
    rm -rf -- "$ROOT"
    local mirror
    mirror=$(grep -rhoE 'https?://[^ ]+/debian/?$' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | grep -v -e security -e snapshot | head -n 1 || true)
    # procps: /bin/kill, which the unit's ExecReload uses and every Raspberry Pi OS has
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,python3-numpy,ca-certificates,systemd,procps \
        bookworm "$ROOT" "${mirror:-http://deb.debian.org/debian}"
    touch "$ROOT/.complete"
}
step "2. arm64 Bookworm rootfs (debootstrap, cached)" rootfs
[ -e "$ROOT/.complete" ] || { say "no rootfs: nothing else can run"; finish; }

# The chroot: kernel filesystems, the host's DNS and CA bundle, a Raspberry Pi 4 /proc/cpuinfo, the source tree.
cat > "$WORK/cpuinfo" <<EOF
$(for n in 0 1 2 3; do printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' $n; done)
Hardware	: BCM2835
Revision	: c03111
Model		: Raspberry Pi 4 Model B Rev 1.1
EOF
for d in proc sys dev dev/pts; do
    case $d in proc) mkdir -p "$ROOT/proc"; mount -t proc proc "$ROOT/proc"; MOUNTS+=("$ROOT/proc") ;; *) bind "/$d" "$ROOT/$d" ;; esac
done
bind "$WORK/cpuinfo" "$ROOT/proc/cpuinfo"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/host-ca.crt"
printf '[global]\ncert = /etc/ssl/certs/host-ca.crt\n' > "$ROOT/etc/pip.conf"   # only the CA: the host's index settings do not apply
rm -rf -- "$ROOT/src"
mkdir -p "$ROOT/src"
( cd "$REPO" && tar --exclude=.git --exclude=.venv --exclude='__pycache__' --exclude=models/default/reference \
    -cf - pyproject.toml setup.py README.md edge deploy systemd config models/default scripts/pi-smoke ) | tar -xf - -C "$ROOT/src"

# ------------------------------------------------------------------ 3. the installer

rootfs_extras() {  # a rootfs cached before procps was in the list above
    [ -x "$ROOT/bin/kill" ] || in_root bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq procps'
}
step "2b. rootfs extras (procps)" rootfs_extras
if [ "$REUSE_INSTALL" = 1 ] && [ -x "$ROOT/opt/crackd/venv/bin/crackd" ]; then
    say "reusing the crackd installed by an earlier run (--reuse-install)"
else
    step "3a. deploy/install.sh --no-start" in_root bash /src/deploy/install.sh --source /src --no-start
fi
verify_unit() {
    if command -v systemd-analyze >/dev/null; then
        # ExecStart must exist for verify: check the unit against the rootfs where it was installed.
        in_root systemd-analyze verify /etc/systemd/system/crackd.service
    else
        echo "systemd-analyze not available"; return 1
    fi
}
step "3b. systemd-analyze verify crackd.service" verify_unit

# ------------------------------------------------------------------ 4. the installed daemon's checks

step "4a. crackd check-config /etc/crackd/crackd.yaml" in_root /opt/crackd/venv/bin/crackd check-config /etc/crackd/crackd.yaml
step "4b. crackd models status" in_root /opt/crackd/venv/bin/crackd models status --state-dir /var/lib/crackd

# ------------------------------------------------------------------ 5. each runtime: golden self-test and infer

INSTALLED=$(in_root /opt/crackd/venv/bin/python -c 'from edge.engine.runtime import load_interpreter_class; print(load_interpreter_class()[0])')
say "installed runtime: $INSTALLED"
OTHER=tflite-runtime
[ "$INSTALLED" = tflite-runtime ] && OTHER=ai-edge-litert
second_venv() {  # the other runtime in its own venv, made like the installer's (system site packages, OS numpy)
    in_root bash -c "set -e; rm -rf /opt/crackd/venv-$OTHER; python3 -m venv --system-site-packages /opt/crackd/venv-$OTHER
        extra=edge; [ $OTHER = tflite-runtime ] && extra=edge-tflite
        /opt/crackd/venv-$OTHER/bin/python -m pip install -q --prefer-binary --constraint /opt/crackd/constraints-tflite.txt \"/src[\$extra]\"
        /opt/crackd/venv-$OTHER/bin/python -m pip uninstall -q -y $INSTALLED || true"
}
step "5a. second venv with $OTHER" second_venv
declare -A VENV_OF=([$INSTALLED]=/opt/crackd/venv [$OTHER]=/opt/crackd/venv-$OTHER)
for rt in "$INSTALLED" "$OTHER"; do
    venv=${VENV_OF[$rt]}
    golden() {
        in_root bash -c "d=\$(mktemp -d) && $venv/bin/crackd models stage /src/models/default --state-dir \$d --runtime $rt --who pi-smoke --json" \
            > "$WORK/golden-$rt.json"
        python3 - "$WORK/golden-$rt.json" "$rt" <<'PY' | tee -a "$SUMMARY"
import json, sys
report = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
for s in (report.get("golden") or {}).get("samples", []):
    print(f"   {sys.argv[2]} {s['image']}: classifier {s['classifier_actual']} (recorded {s['classifier_expected']}), "
          f"segmenter mean |d| {s['segmenter_mean_abs']:.3f} quanta, mask IoU {s['segmenter_iou']}")
PY
    }
    infer() { in_root bash -c "$venv/bin/crackd infer --runtime $rt --json /src/models/default/golden/0?.png"; }
    step "5b. $rt: golden self-test (crackd models stage)" golden
    step "5c. $rt: crackd infer on the golden images" infer
done

# ------------------------------------------------------------------ 6. instruction counts

reference_model() {  # made on the host (TensorFlow), the same bytes on any host
    [ -s "$WORK/ref.tflite" ] || (cd "$REPO" && PYTHONPATH="$REPO" "$HOST_PYTHON" -m trainer.cli reference-model --out "$WORK/ref.tflite")
    cp "$WORK/ref.tflite" "$ROOT/src/ref.tflite"
}
step "6a. reference model (crack-train reference-model, host)" reference_model
# The dynamically linked x86-64 qemu-aarch64 (it loads plugins; the static one cannot) runs inside the chroot
# with its own libraries, so the guest sees the rootfs and the Pi's /proc/cpuinfo. Python is started directly
# (no /usr/bin/env): an exec would go through binfmt to the static qemu, which counts nothing.
stage_qemu() {
    rm -rf -- "$ROOT/opt/qemu-host"; mkdir -p "$ROOT/opt/qemu-host/lib"
    cp /usr/bin/qemu-aarch64 "$WORK/count_insns.so" "$ROOT/opt/qemu-host/"
    ldd /usr/bin/qemu-aarch64 | grep -oE '/[^ ]+\.so[^ ]*' | xargs -I{} cp -L {} "$ROOT/opt/qemu-host/lib/"
}
step "6b. plugin-capable qemu-aarch64 into the rootfs" stage_qemu
count() {  # runtime -> instructions per crack frame, frame without a crack, reference inference
    local rt=$1 venv=${VENV_OF[$1]} out="$WORK/count-$1.txt"
    in_root /opt/qemu-host/lib/ld-linux-x86-64.so.2 --library-path /opt/qemu-host/lib /opt/qemu-host/qemu-aarch64 \
        -cpu "$CPU" -plugin /opt/qemu-host/count_insns.so -d plugin -E PYTHONPATH=/src \
        "$venv/bin/python" /src/scripts/pi-smoke/count_frames.py /src/models/default /src/ref.tflite "$rt" "$FRAMES" \
        > "$out" 2>&1
    python3 - "$out" "$FRAMES" "$rt" <<'PY' | tee -a "$SUMMARY"
import re, sys
text = open(sys.argv[1]).read()
labels = re.findall(r"^mark (\S+)$", text, re.M)
counts = [int(c) for c in re.findall(r"^insn-mark (\d+)$", text, re.M)]
n = int(sys.argv[2])
marks = dict(zip(labels, counts))
per = {k: (marks[f"{k}-end"] - marks[f"{k}-start"]) / n for k in ("crack", "no-crack", "reference")}
ref = per["reference"]
print(f"   {sys.argv[3]}: crack frame {per['crack'] / 1e6:.1f} M insns ({per['crack'] / ref:.2f}x reference), "
      f"no-crack frame {per['no-crack'] / 1e6:.1f} M ({per['no-crack'] / ref:.2f}x), reference {ref / 1e6:.1f} M")
PY
}
for rt in "$INSTALLED" "$OTHER"; do
    step "6c. $rt: instructions per frame ($CPU)" count "$rt"
done
finish
