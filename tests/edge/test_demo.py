"""The quick start as a new user runs it: `scripts/demo.sh`, watched with the mosquitto_sub lines it prints.

No broker answers on the port the demo is pointed at, so the script starts a private mosquitto on a free port, says
how to watch it and how to save a snapshot, and stops the broker when the demo ends. The commands it prints are run
as printed (a real mosquitto_sub): the watch line leaves the binary snapshot out, the save line writes a JPEG.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import threading

import cv2
import numpy as np

from tests.helpers import REPO, free_port
from tests.helpers.cli import crackd

SUB_TIMEOUT_S = "60"  # mosquitto_sub's own bound (-W): the demo's synthetic camera shows a crack every few seconds


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class _Lines:
    """The demo's stdout, read in a thread; `until(prefix)` waits for a line starting with it."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._new = threading.Condition()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc):
        for line in proc.stdout:
            with self._new:
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()
        with self._new:
            self.lines.append("<EOF>")
            self._new.notify_all()

    def until(self, prefix: str, timeout: float = 60) -> str:
        with self._new:
            found = self._new.wait_for(
                lambda: any(line.startswith(prefix) or line == "<EOF>" for line in self.lines), timeout
            )
            line = next((line for line in self.lines if line.startswith(prefix)), None)
        assert found and line is not None, f"no line starting {prefix!r} in:\n" + "\n".join(self.lines)
        return line


def _printed_command(line: str) -> list[str]:
    """`demo: what:   COMMAND [> FILE]` -> COMMAND's argv (the redirection is done by the test)."""
    command = line.split(":", 2)[2].split(">")[0]
    return shlex.split(command)


def test_demo_starts_a_private_broker_prints_how_to_watch_it_and_stops_it(tmp_path):
    nothing_there = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    demo = subprocess.Popen(
        ["scripts/demo.sh", "--no-setup", "--mqtt-port", str(nothing_there), "--state-dir", str(tmp_path / "state")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out = _Lines(demo)
        watch = _printed_command(out.until("demo: watch it"))
        save = _printed_command(out.until("demo: save the latest snapshot"))
        assert out.until("demo: and the daemon's own view").endswith(f"--state-dir {tmp_path / 'state'}")
        port = int(watch[watch.index("-p") + 1])
        assert port != nothing_there and _answers(port)

        # The save line, run as printed: the retained overlay of the latest event, as a JPEG file.
        with open(tmp_path / "snapshot.jpg", "wb") as f:
            subprocess.run([*save, "-W", SUB_TIMEOUT_S], stdout=f, check=True, timeout=90)
        picture = cv2.imdecode(np.fromfile(tmp_path / "snapshot.jpg", np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and picture.shape[2] == 3

        # The watch line, run as printed: JSON topics arrive, the (retained, binary) snapshot does not.
        watched = subprocess.run(
            [*watch, "-C", "3", "-W", SUB_TIMEOUT_S], capture_output=True, timeout=90, check=True
        ).stdout
        topics = [line.split(b" ", 1)[0].decode() for line in watched.splitlines()]
        assert "crackd/demo/status" in topics and "crackd/demo/snapshot" not in topics
        assert b"\xff\xd8" not in watched  # no JPEG bytes in the terminal

        demo.send_signal(signal.SIGINT)  # Ctrl-C: the daemon stops cleanly, then the private broker
        assert demo.wait(60) == 0
        out.until("<EOF>")
        assert any(f"stopped the private mosquitto on port {port}" in line for line in out.lines)
        assert any("crackd stopped after" in line for line in out.lines), "\n".join(out.lines)
        assert not _answers(port)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)


def test_homeassistant_show_and_remove_take_the_demo_device(mosquitto):
    shown = crackd("homeassistant", "show", "--demo")
    assert shown.returncode == 0, shown.stderr
    topics = [line.split('"topic": "', 1)[1].split('"', 1)[0] for line in shown.stdout.splitlines()]
    assert topics and all("/crackd_demo/" in t for t in topics)

    removed = crackd("homeassistant", "remove", "--demo", "--mqtt-port", str(mosquitto.port), "--timeout", "10")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith("removed: ") and "for device demo" in removed.stdout  # at the port given


def test_mqtt_port_is_for_the_demo_only(tmp_path):
    run = crackd("run", "--config", str(tmp_path / "crackd.yaml"), "--mqtt-port", "1884")
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "--mqtt-port: only with --demo" in run.stderr
    run = crackd("run", "--demo", "--mqtt-port", "0")
    assert run.returncode == 2 and "expected a TCP port 1-65535" in run.stderr
