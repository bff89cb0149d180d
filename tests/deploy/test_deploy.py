"""`crack-deploy` against a real sshd and a real crackd daemon.

The fixtures start OpenSSH's sshd on a free loopback port with throwaway host
and user keys, and a real `crackd run` daemon (synthetic camera, MQTT off) on
a device state directory in tmp. crack-deploy reaches the "device" through a
generated ssh_config (-F) with a host alias, exactly as a technician's
~/.ssh/config would, and runs the repo's own `crackd` there. Bundles are
signed copies of the shipped default bundle; the device trusts one test key.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge import __version__
from tests.helpers import REPO, wait_until
from tests.helpers.bundles import copy_default_bundle, swap_golden_segmenter_outputs
from tests.helpers.device import Device
from tests.helpers.releases import version_of
from tests.helpers.sshd import HOST, SSHD

REMOTE_CRACKD = f"env PYTHONPATH={REPO} {sys.executable} -m edge.cli"

pytestmark = pytest.mark.skipif(
    not SSHD.exists() or os.geteuid() != 0 or not shutil.which("ssh"),
    reason="needs OpenSSH's sshd and root (sshd runs as root on a loopback port)",
)


@pytest.fixture
def device_factory(tmp_path, signer_keys):
    devices = []

    def make(initial_bundle: Path, pythonpath: Path = REPO, name: str = "device", start: bool = True) -> Device:
        dev = Device(tmp_path / name, initial_bundle, signer_keys, pythonpath, start)
        devices.append(dev)
        return dev

    yield make
    for dev in devices:
        dev.stop()


@pytest.fixture
def device(device_factory, make_bundle, signer_keys) -> Device:
    """A device of its own, for tests that change what it serves."""
    return device_factory(make_bundle("base", sign=signer_keys.trusted))


@pytest.fixture(scope="module")
def steady_device(tmp_path_factory, signer_keys):
    """One device shared by the tests whose bundles must never
    be activated (each checks it still serves its release)."""
    root = tmp_path_factory.mktemp("steady")
    dev = Device(root / "device", copy_default_bundle(root / "base", "steady", sign=signer_keys.trusted), signer_keys)
    yield dev
    dev.stop()


def push(
    sshd,
    device: Device,
    bundle: Path,
    *extra: str,
    hosts=(HOST,),
    remote_crackd: str = REMOTE_CRACKD,
    timeout: float = 20,
    wait: bool = True,
):
    cmd = [
        sys.executable,
        "-m",
        "deploy.cli",
        "push",
        str(bundle),
        *hosts,
        "-F",
        str(sshd.config),
        "--remote-crackd",
        remote_crackd,
        "--remote-config",
        str(device.config),
        "--timeout",
        f"{timeout:g}",
        "--settle",
        "1",
        "--who",
        "tester@bench",
        *extra,
    ]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)


def deploy_cli(sshd, device: Device, command: str, *args: str):
    cmd = [
        sys.executable,
        "-m",
        "deploy.cli",
        command,
        *args,
        "-F",
        str(sshd.config),
        "--remote-crackd",
        REMOTE_CRACKD,
        "--remote-config",
        str(device.config),
    ]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


def assert_untouched(device: Device, result) -> None:
    """Never activated: current is still the initial release and the daemon still serves it."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert device.releases().current_version() == device.initial
    assert not [h for h in device.history() if h.action == "activate" and h.version != device.initial]
    device.wait_serving(device.initial, timeout=5)


# --------------------------------------------------------------------------- happy path


def test_push_deploys_a_signed_bundle_that_then_serves_healthily(sshd, device, make_bundle, signer_keys):
    bundle = make_bundle("new", sign=signer_keys.trusted)
    new = version_of(bundle)

    r = push(sshd, device, bundle)

    assert r.returncode == 0, r.stdout + r.stderr
    status = device.wait_serving(new, timeout=5)
    assert status.last_reload.ok is True
    rel = device.releases()
    assert rel.current_version() == new and rel.previous_version() == device.initial
    assert {r.version for r in rel.installed()} >= {new, device.initial}  # the previous release is kept for rollback
    actions = [(h.action, h.version, h.outcome) for h in device.history()][-3:]
    assert actions == [("stage", new, "staged"), ("activate", new, "activated"), ("confirm", new, "healthy")]
    assert all(h.who == "tester@bench" for h in device.history()[-3:])
    assert device.history()[-2].from_version == device.initial
    # the summary table names host, old and new version and the outcome
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith(HOST))
    assert device.initial in row and new in row and "deployed" in row
    assert "1/1 host(s) succeeded" in r.stdout

    # status and manual rollback through crack-deploy as well
    st = deploy_cli(sshd, device, "status", HOST, "--json")
    assert st.returncode == 0 and json.loads(st.stdout)["hosts"][0]["status"]["current"] == new
    back = deploy_cli(sshd, device, "rollback", HOST, "--timeout", "20", "--settle", "1")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "restored" in back.stdout
    device.wait_serving(device.initial, timeout=5)
    rollback = [h for h in device.history() if h.action == "rollback"][-1]
    assert rollback.version == device.initial and rollback.reason == "manual rollback (crack-deploy)"


# --------------------------------------------------------------------------- never activated


def test_a_bundle_with_a_wrong_checksum_is_refused_before_anything_is_copied(
    sshd, steady_device, make_bundle, signer_keys
):
    def wrong_sha(m, d):
        m["models"]["segmenter"]["sha256"] = "0" * 64

    bundle = make_bundle("badsum", edit=wrong_sha, sign=signer_keys.trusted)
    r = push(sshd, steady_device, bundle)

    assert_untouched(steady_device, r)
    assert "segmenter.tflite" in r.stderr and "not deployed anywhere" in r.stderr
    assert not [h for h in steady_device.history() if h.version == version_of(bundle)]  # it never reached the device


def test_a_copy_damaged_on_the_way_is_refused_by_the_device(sshd, steady_device, make_bundle, signer_keys, tmp_path):
    # The bundle is fine here; the device's copy gets damaged after the transfer (a flaky link or SD card).
    # A wrapper in front of the device's crackd flips bytes of the uploaded classifier just before staging.
    wrapper = tmp_path / "damaging-crackd"
    wrapper.write_text(
        'if [ "$1 $2" = "models stage" ]; then printf XXXX | dd of="$3/classifier.tflite" bs=1 seek=200 conv=notrunc '
        f'2>/dev/null; fi\nexec {REMOTE_CRACKD} "$@"\n'
    )
    bundle = make_bundle("damaged", sign=signer_keys.trusted)

    r = push(sshd, steady_device, bundle, remote_crackd=f"sh {wrapper}")

    assert_untouched(steady_device, r)
    assert "device refused the bundle" in r.stderr + r.stdout and "does not match the manifest" in r.stdout
    last = steady_device.history()[-1]
    assert (last.action, last.version, last.outcome) == ("stage", version_of(bundle), "rejected")


def test_an_unsigned_bundle_is_refused(sshd, steady_device, make_bundle):
    r = push(sshd, steady_device, make_bundle("unsigned"))

    assert_untouched(steady_device, r)
    assert "not signed" in r.stdout and "UNSIGNED" in r.stderr


def test_a_bundle_signed_by_an_untrusted_key_is_refused(sshd, steady_device, make_bundle, signer_keys):
    r = push(sshd, steady_device, make_bundle("stranger", sign=signer_keys.stranger))

    assert_untouched(steady_device, r)
    assert "not in" in r.stdout and "allowed_signers" in r.stdout


def test_a_bundle_whose_model_cannot_be_loaded_is_refused(sshd, steady_device, make_bundle, signer_keys):
    from edge.engine.bundle import sha256_file

    def truncate(m, d):
        p = d / "segmenter.tflite"
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        m["models"]["segmenter"].update(sha256=sha256_file(p), bytes=p.stat().st_size)

    r = push(sshd, steady_device, make_bundle("unloadable", edit=truncate, sign=signer_keys.trusted))

    assert_untouched(steady_device, r)
    assert "segmenter.tflite: the runtime could not load it" in r.stdout


def test_a_bundle_that_fails_its_golden_samples_is_refused(sshd, steady_device, make_bundle, signer_keys):
    r = push(
        sshd,
        steady_device,
        make_bundle("golden", edit=lambda m, d: swap_golden_segmenter_outputs(m), sign=signer_keys.trusted),
    )

    assert_untouched(steady_device, r)
    assert "golden sample" in r.stdout and "segmenter" in r.stdout


def test_the_pusher_cannot_switch_off_the_devices_signature_policy(
    sshd, steady_device, make_bundle, signer_keys, tmp_path
):
    """The device's own config says require_signature: true. Options passed through to `crackd models` may only make
    that stricter: an unsigned bundle with a one-bit flip in its classifier (the golden samples would not notice) is
    refused with --no-require-signature, and a bundle signed by a stranger is refused although --allowed-signers names
    a file that trusts the stranger."""
    from edge.engine.bundle import sha256_file

    def flip_a_bit(m, d):
        p = d / "classifier.tflite"
        data = bytearray(p.read_bytes())
        data[len(data) - 100] ^= 0x01
        p.write_bytes(bytes(data))
        m["models"]["classifier"]["sha256"] = sha256_file(p)

    flipped = make_bundle("flipped", edit=flip_a_bit)
    r = push(sshd, steady_device, flipped, "--device-option=--no-require-signature")

    assert_untouched(steady_device, r)
    assert "may only make it stricter" in r.stdout
    assert not [h for h in steady_device.history() if h.version == version_of(flipped)]

    stranger_signers = tmp_path / "stranger_signers"
    stranger_signers.write_text(
        f'stranger@test namespaces="crackd-bundle" {signer_keys.stranger.with_suffix(".pub").read_text().strip()}\n'
    )
    foreign = make_bundle("foreign", sign=signer_keys.stranger)
    r = push(sshd, steady_device, foreign, f"--device-option=--allowed-signers={stranger_signers}")

    assert_untouched(steady_device, r)
    assert "device refused the bundle" in r.stdout and str(signer_keys.allowed_signers) in r.stdout


# --------------------------------------------------------------------------- activated, then unhealthy: rolled back


def test_a_bundle_the_running_daemon_refuses_at_reload_is_rolled_back(
    sshd, device_factory, make_bundle, signer_keys, tmp_path
):
    """Version skew, a real field failure: crackd was upgraded on disk (the `crackd models` CLI is new) but the
    running daemon is still the old one. A bundle needing the new crackd passes staging, is activated, and the
    old daemon refuses it at reload (NeedsNewerCrackd), keeping the old bundle: the new release never serves.
    The old daemon here is a copy of the edge package that reports version 0.0.0."""
    old_code = tmp_path / "old-crackd"
    shutil.copytree(REPO / "edge", old_code / "edge")
    init = old_code / "edge" / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{__version__}"', '__version__ = "0.0.0"'))

    def min_version(v):
        return lambda m, d: m.__setitem__("min_crackd_version", v)

    device = device_factory(
        make_bundle("old-ok", edit=min_version("0.0.0"), sign=signer_keys.trusted), pythonpath=old_code
    )
    assert device.status().version == "0.0.0"
    bundle = make_bundle("needs-new", edit=min_version(__version__), sign=signer_keys.trusted)

    r = push(sshd, device, bundle)

    assert r.returncode == 1, r.stdout + r.stderr
    assert "rolled back" in r.stdout and f"needs crackd >= {__version__}" in r.stdout
    rel = device.releases()
    assert rel.current_version() == device.initial
    actions = [
        (h.action, h.version, h.outcome) for h in device.history() if h.action in ("stage", "activate", "rollback")
    ][-3:]
    assert actions == [
        ("stage", version_of(bundle), "staged"),
        ("activate", version_of(bundle), "activated"),
        ("rollback", device.initial, "rolled back"),
    ]
    rollback = [h for h in device.history() if h.action == "rollback"][-1]
    assert "refused" in rollback.reason and rollback.who == "tester@bench"
    device.wait_serving(device.initial, timeout=5)


def test_a_daemon_that_stops_processing_during_the_deploy_is_rolled_back(sshd, device, make_bundle, signer_keys):
    """The daemon hangs while the new bundle goes live (frozen with SIGSTOP the moment the bundle is staged, as
    a hung camera or inference would be). It never serves the new release with frames flowing, so crack-deploy
    rolls back when --timeout expires, and once the daemon runs again it serves the old release."""
    bundle = make_bundle("hangs", sign=signer_keys.trusted)
    frozen = threading.Event()

    def freeze_once_staged():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not frozen.is_set():
            if any(h.action == "stage" and h.version == version_of(bundle) for h in device.history()):
                device.proc.send_signal(signal.SIGSTOP)
                frozen.set()
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=freeze_once_staged, daemon=True)
    watcher.start()
    try:
        r = push(sshd, device, bundle, timeout=2)
    finally:
        frozen.set()
        device.proc.send_signal(signal.SIGCONT)
    watcher.join()

    assert r.returncode == 1, r.stdout + r.stderr
    assert "not serving" in r.stdout and "rolled back" in r.stdout
    assert "frames_processed stayed at" in r.stdout or "daemon status is" in r.stdout  # says what was measured
    assert device.releases().current_version() == device.initial
    assert [h.action for h in device.history()][-4:] == [
        "activate",
        "health",
        "rollback",
        "health",
    ]  # frozen: serves nothing
    device.wait_serving(device.initial, timeout=20)


def test_the_health_wait_says_what_it_measured(device):
    """A daemon that still reports itself healthy but processes no frames (frozen with SIGSTOP right after a fresh
    status): the wait fails naming the frame counter that did not move, not a guess. Settle times that cannot fit
    in the timeout are refused outright."""
    from edge.timestamps import iso_utc

    rel = device.releases()
    with pytest.raises(ValueError, match="shorter than the timeout"):
        rel.wait_serving(device.initial, iso_utc(time.time()), timeout_s=2, settle_s=3)
    wait_until(
        lambda: device.status().frames_processed > 0 and rel.daemon_status().age_s < 1,
        20,
        "a fresh status with frames",
        interval=0.02,
    )
    device.proc.send_signal(signal.SIGSTOP)
    try:
        health = rel.wait_serving(device.initial, iso_utc(time.time()), timeout_s=2, settle_s=1)
    finally:
        device.proc.send_signal(signal.SIGCONT)

    assert not health.ok
    assert (
        "frames_processed stayed at" in health.message
        and f"while status.json said {device.initial} was serving" in health.message
    )


# --------------------------------------------------------------------------- one deployment at a time


def test_one_deploy_at_a_time_per_device_others_fail_clearly_or_wait(sshd, device, make_bundle, signer_keys):
    first_bundle = make_bundle("first", sign=signer_keys.trusted)
    busy_bundle = make_bundle("busy", sign=signer_keys.trusted)
    waiting_bundle = make_bundle("waits", sign=signer_keys.trusted)
    holder = device.state / "models" / ".lock.holder"

    first = push(sshd, device, first_bundle, wait=False)
    try:
        wait_until(holder.exists, 60, "the first deploy to take the device lock", interval=0.02)
        waiting = push(
            sshd, device, waiting_bundle, "--lock-wait", "120", hosts=("pi-twin",), wait=False
        )  # another alias, same device
        busy = push(sshd, device, busy_bundle, hosts=("pi-twin",))
        first_out, first_err = first.communicate(timeout=180)
        waiting_out, waiting_err = waiting.communicate(timeout=180)
    finally:
        for proc in (first, locals().get("waiting")):
            if proc is not None and proc.poll() is None:
                proc.kill()

    assert first.returncode == 0, first_out + first_err
    assert busy.returncode == 1
    assert "busy" in busy.stdout and "deploy by tester@bench" in busy.stdout  # names who holds the device
    assert not [h for h in device.history() if h.version == version_of(busy_bundle)]  # it changed nothing
    assert waiting.returncode == 0, waiting_out + waiting_err  # --lock-wait: deployed after the first one finished
    confirmed = [h.version for h in device.history() if h.action == "confirm"]
    assert confirmed == [version_of(first_bundle), version_of(waiting_bundle)]
    device.wait_serving(version_of(waiting_bundle), timeout=5)


# --------------------------------------------------------------------------- rollouts


def test_a_failed_canary_stops_the_rollout(sshd, steady_device, make_bundle, signer_keys, tmp_path):
    bundle = make_bundle("canary", sign=signer_keys.trusted)
    hosts_file = tmp_path / "line3.hosts"
    hosts_file.write_text(f"# line 3 cameras\npi-unreachable   # canary\n\n{HOST}\n")

    r = push(sshd, steady_device, bundle, "--canary", "1", "--json", "--hosts-file", str(hosts_file), hosts=())

    assert r.returncode == 1
    summary = {h["host"]: h for h in json.loads(r.stdout)["hosts"]}
    assert summary["pi-unreachable"]["outcome"] == "unreachable" and summary["pi-unreachable"]["canary"]
    assert summary[HOST]["outcome"] == "skipped" and "canary failed" in summary[HOST]["message"]
    assert steady_device.releases().current_version() == steady_device.initial


def test_a_device_that_is_not_serving_is_left_alone_unless_forced(sshd, device_factory, make_bundle, signer_keys):
    device = device_factory(make_bundle("base", sign=signer_keys.trusted), start=False)  # daemon not running
    r = push(sshd, device, make_bundle("idle", sign=signer_keys.trusted))

    assert r.returncode == 1
    assert "not serving healthily before the deploy" in r.stdout and "--force" in r.stdout
    assert device.releases().current_version() == device.initial


# --------------------------------------------------------------------------- options and --json


def _deploy(*args: str):
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "command, options, expected",
    [
        ("push", ["--settle", "3", "--timeout", "2"], "--settle 3 must be shorter than --timeout 2"),
        ("push", ["--timeout", "0"], "--timeout: expected more than 0 seconds, got 0"),
        ("push", ["--settle", "-1"], "--settle: expected 0 seconds or more, got -1"),
        ("push", ["--lock-wait", "-5"], "--lock-wait: expected 0 seconds or more, got -5"),
        ("rollback", ["--settle", "5", "--timeout", "5"], "--settle 5 must be shorter than --timeout 5"),
    ],
)
def test_options_that_can_never_succeed_are_refused_before_connecting(make_bundle, command, options, expected):
    target = [str(make_bundle("options"))] if command == "push" else []
    r = _deploy(command, *target, "no-such-host.invalid", *options)

    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"crack-deploy {command}: {expected}"), r.stderr


def test_push_json_has_a_json_answer_for_every_outcome(make_bundle):
    def wrong_sha(m, d):
        m["models"]["classifier"]["sha256"] = "0" * 64

    refused = _deploy("push", str(make_bundle("json-badsum", edit=wrong_sha)), "no-such-host.invalid", "--json")
    usage = _deploy(
        "push", str(make_bundle("json-usage")), "no-such-host.invalid", "--json", "--settle", "3", "--timeout", "2"
    )
    no_hosts = _deploy("push", str(make_bundle("json-nohosts")), "--json")
    bad_type = _deploy("push", str(make_bundle("json-badtype")), "no-such-host.invalid", "--json", "--timeout", "soon")

    local = json.loads(refused.stdout)
    assert refused.returncode == 1 and local["ok"] is False and local["kind"] == "LocalBundleInvalid"
    assert "classifier.tflite" in local["error"] and local["hosts"] == []
    for r in (usage, no_hosts, bad_type):
        payload = json.loads(r.stdout)
        assert r.returncode == 2 and payload["ok"] is False and payload["kind"] == "UsageError" and payload["error"]
