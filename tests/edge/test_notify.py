"""systemd integration: the sd_notify protocol on real AF_UNIX
datagram sockets, the watchdog rule, journald-friendly logs.

systemd-python is not installed here, so these exercise crackd's own protocol
writer (the same datagrams `systemd.daemon.notify` would send). The full
READY / RELOADING / WATCHDOG / STOPPING sequence of a real daemon process is
checked in tests/edge/test_daemon.py (the SIGHUP test).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid

import pytest

from edge.config import config_from_dict
from edge.daemon.notify import Notifier, setup_logging
from tests.helpers import write_frames
from tests.helpers.sources import wedging_source


class Listener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._run = True
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self):
        while self._run:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def wait_for(self, text, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in m for m in self.messages):
                return True
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} in {self.messages}")

    def close(self):
        self._run = False
        self.sock.close()


@pytest.fixture
def path_socket(tmp_path):
    listener = Listener(str(tmp_path / "notify"))
    yield listener, str(tmp_path / "notify")
    listener.close()


def test_without_notify_socket_everything_is_a_no_op():
    n = Notifier(environ={})
    assert not n.enabled and n.ready("x") is False and n.watchdog() is False
    assert n.watchdog_interval_s is None


def test_messages_reach_a_path_socket(path_socket):
    listener, address = path_socket
    n = Notifier(environ={"NOTIFY_SOCKET": address})
    assert n.ready("serving 1.0")
    assert n.status("12 fps")
    assert n.watchdog()
    assert n.stopping()
    listener.wait_for("STOPPING=1")
    assert listener.messages == ["READY=1\nSTATUS=serving 1.0", "STATUS=12 fps", "WATCHDOG=1", "STOPPING=1"]


def test_messages_reach_an_abstract_socket():
    name = f"crackd-test-{uuid.uuid4().hex}"
    listener = Listener("\0" + name)
    try:
        n = Notifier(environ={"NOTIFY_SOCKET": "@" + name})
        assert n.reloading()
        listener.wait_for("RELOADING=1")
        (message,) = listener.messages
        lines = message.split("\n")
        assert lines[0] == "RELOADING=1"
        usec = int(lines[1].removeprefix("MONOTONIC_USEC="))
        assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 5_000_000
    finally:
        listener.close()


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_this_pid():
    assert Notifier(environ={"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000"}).watchdog_interval_s == 2.0
    mine = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(environ=mine).watchdog_interval_s == 2.0
    assert Notifier(environ={**mine, "WATCHDOG_PID": "1"}).watchdog_interval_s is None


def test_a_vanished_notify_socket_does_not_raise(tmp_path):
    assert Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready() is False


def test_under_systemd_without_systemd_python_logs_carry_syslog_priorities(capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "systemd", None)  # as on a device without systemd-python
    monkeypatch.setitem(sys.modules, "systemd.journal", None)
    try:
        assert setup_logging("info", journald=True, environ={"JOURNAL_STREAM": "8:1234"}) == "stderr-journal"
        logging.getLogger("edge.test").warning("camera stalled")
        logging.getLogger("edge.test").info("event started")
        err = capsys.readouterr().err.splitlines()
        assert err[-2:] == ["<4>edge.test: camera stalled", "<6>edge.test: event started"]
        assert setup_logging("info", journald=True, environ={}) == "stderr"
    finally:
        setup_logging("warning", journald=False, environ={})


def test_watchdog_follows_the_process_not_the_camera(tmp_path, darkness_bundle, path_socket):
    """A camera that goes away is a state (not healthy, published), not a reason for systemd to restart crackd:
    restarts do not bring a camera back, and five in ten minutes would leave the unit failed with the outbox
    undelivered. The pings go on while the camera is away, and stop only for a wedged capture call."""
    import dataclasses

    from edge.daemon.supervisor import Supervisor

    listener, address = path_socket
    frames = tmp_path / "frames"
    write_frames(frames, "C.....")
    cfg = config_from_dict(
        {
            "source": {
                "type": "folder",
                "folder": {"path": str(frames), "fps": 50},
                "retry_initial_s": 0.05,
                "retry_max_s": 0.1,
            },
            "model": {"bundle": str(darkness_bundle)},
            "storage": {"state_dir": str(tmp_path / "state")},
            "mqtt": {"enabled": False},
            "releases": {"require_signature": False},  # the darkness test bundle is unsigned
        }
    )
    sup = Supervisor(cfg, notifier=Notifier(environ={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}))
    sup.HEALTH_WINDOW_MIN_S = 0.5
    sup.start()
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        listener.wait_for("READY=1")
        time.sleep(1.0)
        assert listener.messages.count("WATCHDOG=1") >= 4
        shutil.move(frames, tmp_path / "gone")  # the camera goes away
        deadline = time.monotonic() + 10
        while sup.capture.state != "reconnecting" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # > the 0.5 s health window
        away_from = len(listener.messages)
        time.sleep(1.0)  # five watchdog periods with no frame
        assert sup.capture.state == "reconnecting" and not sup.healthy()
        assert listener.messages[away_from:].count("WATCHDOG=1") >= 3
        shutil.move(tmp_path / "gone", frames)  # it comes back
        deadline = time.monotonic() + 10
        while not sup.healthy() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sup.healthy()
    finally:
        sup.request_stop()
        runner.join(10)
    listener.wait_for("STOPPING=1")

    wedged = wedging_source()
    cfg = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, read_timeout_s=0.1))
    sup = Supervisor(
        cfg, notifier=Notifier(environ={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}), source=wedged
    )
    sup.CAPTURE_HANG_MIN_S = 0.5
    sup.start()
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while wedged.health.frames < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the call has hung for longer than CAPTURE_HANG_MIN_S
        hung_from = len(listener.messages)
        time.sleep(0.6)
        assert "WATCHDOG=1" not in listener.messages[hung_from:]  # systemd restarts a wedged driver
    finally:
        wedged.release.set()
        sup.request_stop()
        runner.join(10)


def test_the_unit_restarts_without_ever_giving_up_and_says_why():
    from tests.helpers import REPO

    unit = (REPO / "systemd" / "crackd.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["StartLimitIntervalSec"] == "0" and settings["Restart"] == "on-failure"
    assert settings["RestartMaxDelaySec"] and settings["WatchdogSec"]
    assert "camera" in unit and "keeps publishing" in unit


def test_systemd_python_sends_when_the_socket_is_in_the_process_environment(path_socket, monkeypatch):
    """With systemd-python installed (the `systemd` extra), the library's sd_notify delivers the messages."""
    pytest.importorskip("systemd.daemon", reason="systemd-python is installed by scripts/test.sh (extra `systemd`)")
    listener, address = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    n = Notifier()
    assert n._sd_notify is not None
    assert n.ready("serving 2.0")
    listener.wait_for("READY=1")
    assert listener.messages == ["READY=1\nSTATUS=serving 2.0"]


def test_under_systemd_with_systemd_python_logs_go_to_journald():
    pytest.importorskip("systemd.journal", reason="systemd-python is installed by scripts/test.sh (extra `systemd`)")
    try:
        assert setup_logging("info", journald=True, environ={"JOURNAL_STREAM": "8:1234"}) == "journald"
    finally:
        setup_logging("warning", journald=False, environ={})
