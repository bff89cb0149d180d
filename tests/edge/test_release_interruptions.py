"""`kill -9` of `crackd models activate` / `rollback` at each step of the switch, and an activate during a reload.

Each case kills the real command at one named step (CRACKD_KILL_AT, edge.releases.faults) while a real daemon
(synthetic camera, MQTT off) serves the state directory, then checks what a power cut there would leave: one
current release that passes verification, the daemon alive and serving a verified release, and the same command,
run again, completing its switch, after which the daemon serves it. The cases share one daemon and three staged
releases; each starts from current = A, previous = C.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge.atomic_write import replace_symlink, temporary_links
from edge.engine.bundle import read_manifest, verify_files
from edge.releases.faults import KILL_AT_ENV, PRUNE_STEPS, SWITCH_STEPS
from edge.releases.manager import ReleasePolicy, Releases
from tests.helpers import REPO, read_status, wait_until
from tests.helpers.bundles import copy_default_bundle
from tests.helpers.cli import crackd
from tests.helpers.daemon import terminate


class Device:
    """A state directory with releases A, B, C and a running `crackd run` that reports to a notify socket."""

    def __init__(self, root: Path):
        self.root = root
        self.state = root / "state"
        self.state.mkdir()
        self.rel = Releases(self.state, ReleasePolicy(require_signature=False, latency_runs=1))
        self.a, self.b, self.c = (
            self.rel.stage(copy_default_bundle(root / f"bundle-{s}", f"int-{s}"), who="factory").version
            for s in ("a", "b", "c")
        )
        self.saved = root / "saved-c"  # a copy of release C, put back after a case pruned it
        shutil.copytree(self.rel.layout.release(self.c), self.saved, symlinks=True)
        self.rel.activate(self.c, who="factory")
        self.rel.activate(self.a, who="factory")
        self.config = root / "crackd.yaml"
        self.config.write_text(
            "device_id: interrupt-pi\n"
            "source:\n  type: synthetic\n  synthetic: {fps: 10, width: 160, height: 120, seed: 1}\n"
            f"storage:\n  state_dir: {self.state}\n  snapshots: false\n"
            "mqtt:\n  enabled: false\n"
            "logging:\n  journald: false\n"
            "releases:\n  require_signature: false\n  keep: 3\n"
            "stats_interval_s: 1\n"
        )
        self.notify_path = root / "notify.sock"
        self.notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify_sock.bind(str(self.notify_path))
        self.notices: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read_notices, daemon=True).start()
        self.log = open(root / "daemon.log", "a")  # noqa: SIM115  (the daemon writes to it until stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(self.config)],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(self.notify_path)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.wait_serving(self.a)

    def _read_notices(self) -> None:
        while True:
            try:
                self.notices.put(self.notify_sock.recv(4096).decode())
            except OSError:
                return

    def wait_serving(self, version: str, timeout: float = 30) -> None:
        def serving():
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited: {(self.root / 'daemon.log').read_text()[-2000:]}")
            st = read_status(self.state)
            return st.pid == self.proc.pid and st.bundle_version == version and st.healthy

        wait_until(serving, timeout, f"the daemon to serve {version}", interval=0.05)

    def reset(self) -> None:
        """current = A, previous = C, C installed, the daemon serving A (what each case starts from)."""
        layout = self.rel.layout
        assert not layout.switch_intent.exists() and not temporary_links(layout.current)
        if not layout.release(self.c).is_dir():
            shutil.copytree(self.saved, layout.release(self.c), symlinks=True)
        if (self.rel.current_version(), self.rel.previous_version()) != (self.a, self.c):
            replace_symlink(layout.previous, f"releases/{self.c}")
            replace_symlink(layout.current, f"releases/{self.a}")
            self.proc.send_signal(signal.SIGHUP)
        self.wait_serving(self.a)

    def models(self, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != KILL_AT_ENV}
        if kill_at:
            env[KILL_AT_ENV] = kill_at
        return crackd("models", *args, "--state-dir", str(self.state), "--config", str(self.config), env=env)

    def stop(self) -> None:
        terminate(self.proc)
        self.log.close()
        self.notify_sock.close()


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    dev = Device(tmp_path_factory.mktemp("interrupt"))
    yield dev
    dev.stop()


def assert_consistent(dev: Device, allowed: set[str]) -> None:
    """What a kill may leave: current names a release that passes verification, the daemon serves a verified one."""
    current = dev.rel.current_version()
    assert current in allowed
    verify_files(read_manifest(dev.rel.layout.release(current)))
    previous = dev.rel.previous_version()
    assert previous is not None and dev.rel.layout.release(previous).is_dir()
    assert dev.proc.poll() is None
    assert read_status(dev.state).bundle_version in allowed


ACTIVATE_STEPS = SWITCH_STEPS + PRUNE_STEPS
# Killed after switch.json was written and before it was removed: the next command undoes the switch.
UNDONE_STEPS = SWITCH_STEPS[SWITCH_STEPS.index("intent-written") : SWITCH_STEPS.index("committed")]


@pytest.mark.parametrize("step", ACTIVATE_STEPS)
def test_activate_killed_at_each_step_leaves_one_verified_release_and_completes_when_run_again(device, step):
    device.reset()
    activate = ("activate", device.b, "--keep", "1", "--json")  # keep 1: the activate also prunes C

    before = len(device.rel.history())

    killed = device.models(*activate, kill_at=step)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert_consistent(device, {device.a, device.b})
    again = device.models(*activate)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["version"] == device.b
    assert (device.rel.current_version(), device.rel.previous_version()) == (device.b, device.a)
    device.wait_serving(device.b)
    assert sorted(p.name for p in device.rel.layout.releases.iterdir()) == sorted([device.a, device.b])
    undone = [r for r in device.rel.history()[before:] if r.outcome == "interrupted"]
    assert [r.version for r in undone] == ([device.b] if step in UNDONE_STEPS else [])


@pytest.mark.parametrize("step", SWITCH_STEPS)
def test_rollback_killed_at_each_step_leaves_one_verified_release_and_completes_when_run_again(device, step):
    device.reset()

    killed = device.models("rollback", "--json", kill_at=step)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert_consistent(device, {device.a, device.c})
    done = step == "committed"  # killed after the switch stood: a rerun is a second rollback
    again = device.models("rollback", "--json")
    assert again.returncode == 0, again.stderr
    expected = (device.a, device.c) if done else (device.c, device.a)
    assert (device.rel.current_version(), device.rel.previous_version()) == expected
    device.wait_serving(expected[0])


def test_activate_during_a_sighup_reload_ends_with_the_daemon_serving_the_new_release(device):
    """The daemon is stopped (SIGSTOP) right after it announced RELOADING=1 for a SIGHUP, so the activate's switch and
    its own SIGHUP land while that reload is under way; the daemon must end up serving what was activated."""
    device.reset()
    while not device.notices.empty():
        device.notices.get_nowait()

    device.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "RELOADING=1" in device.notices.get(timeout=30), 30, "the daemon to begin its reload")
    device.proc.send_signal(signal.SIGSTOP)
    try:
        activated = device.models("activate", device.b, "--json")
    finally:
        device.proc.send_signal(signal.SIGCONT)

    assert activated.returncode == 0, activated.stderr
    assert json.loads(activated.stdout)["daemon"]["signalled"] is True
    device.wait_serving(device.b)
    reload = read_status(device.state).last_reload
    assert reload is not None and reload.ok and reload.bundle_version == device.b
