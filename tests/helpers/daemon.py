"""The daemon under test: a config dict for the folder camera and the darkness bundle, and a Supervisor in a thread.

Used by every test that runs the whole pipeline (daemon, Home Assistant, Prometheus, Sparkplug, MQTT snapshots).
Folder frames come from a pattern (tests/helpers/frames.py); BLOCK is one event's worth of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from edge.daemon.notify import Notifier
from edge.daemon.supervisor import Supervisor
from tests.helpers.paths import REPO

# 3 crack frames then 5 clear ones: with k=2 of n=3 and m=3 every block is exactly one event.
BLOCK = "CCC....."


def daemon_dict(tmp_path: Path, bundle: Path, frames: Path, port: int | None, **over) -> dict:
    """A daemon config (as parsed YAML) replaying `frames` once through `bundle`, MQTT on `port` (None: off).

    `over` sets keys by path: `max_fps=40` (top level), `mqtt__publish_frames=True`, `source__folder__loop=True`.
    """
    d = {
        "device_id": "cam1",
        "source": {
            "type": "folder",
            "folder": {"path": str(frames), "fps": 0, "loop": False},
            "retry_initial_s": 0.05,
            "retry_max_s": 0.2,
            "read_timeout_s": 1.0,
        },
        "model": {"bundle": str(bundle)},
        "decision": {"start_k": 2, "start_n": 3, "end_m": 3, "update_interval_s": 60},
        "storage": {"state_dir": str(tmp_path / "state"), "record_frames": "all"},
        "mqtt": {
            "enabled": port is not None,
            "host": "127.0.0.1",
            "port": port or 1883,
            "reconnect_min_s": 1,
            "reconnect_max_s": 1,
            "keepalive": 5,
            "flush_timeout_s": 10,
        },
        "logging": {"journald": False},
        "releases": {"require_signature": False},  # the darkness test bundle is unsigned
        "stats_interval_s": 1,
    }
    for key, value in over.items():
        section, _, name = key.partition("__")
        if name:
            sub, _, leaf = name.partition("__")
            if leaf:
                d[section].setdefault(sub, {})[leaf] = value
            else:
                d[section][sub] = value
        else:
            d[section] = value
    return d


def write_config(tmp_path: Path, config: dict) -> Path:
    """`config` as the daemon's YAML file in `tmp_path` (crackd.yaml)."""
    path = tmp_path / "crackd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class InProcess:
    """A Supervisor running its loop in a thread of this process (no signal handlers)."""

    def __init__(self, cfg, notifier=None):
        self.sup = Supervisor(cfg, notifier=notifier or Notifier(environ={}))
        self.sup.start()
        self.thread = threading.Thread(target=self.sup.run, daemon=True)
        self.thread.start()

    def stop(self, timeout=20):
        self.sup.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "daemon did not stop in time"

    def wait_finished(self, timeout=30):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "daemon did not finish"


def start_daemon(config: dict, tmp_path: Path, env: dict | None = None) -> subprocess.Popen:
    """`crackd run` on `config` as a real child process (signals, SIGKILL); its stderr goes to tmp_path/daemon.log."""
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(write_config(tmp_path, config))],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "daemon.log", "ab"),
    )


def stop_process(proc, sig=signal.SIGTERM, timeout=20):
    if proc.poll() is None:
        proc.send_signal(sig)
        proc.wait(timeout)
    return proc.returncode


def terminate(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Stop a daemon a test may have paused (SIGSTOP): continue it, SIGTERM, SIGKILL if not gone by `timeout`."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def flag_missed_after_a_run(tmp_path: Path, bundle: Path, held: int = 3, note: str | None = None, **over) -> dict:
    """A daemon looping over one BLOCK of folder frames, holding at most `held` frames for flag-missed, asked
    (`crackd events flag-missed --json`) to keep them all; returns its answer, with `held_bytes`: what it held."""
    import contextlib
    import io
    import json

    from edge.cli import main
    from edge.config import config_from_dict
    from tests.helpers.frames import write_frames
    from tests.helpers.waiting import wait_until

    frames = tmp_path / "frames"
    write_frames(frames, BLOCK)
    settings = dict(source__folder__loop=True, source__folder__fps=50)
    settings.update(storage__missed_buffer_s=0.1 * held, storage__missed_buffer_frames=held)
    daemon = InProcess(config_from_dict(daemon_dict(tmp_path, bundle, frames, None, **settings, **over)))
    try:
        buffer = daemon.sup.parts.pipeline.samples.missed
        wait_until(lambda: len(buffer.frames) == held, what=f"{held} frames held")
        wait_until(lambda: daemon.sup.parts.pipeline.frames_processed > 8 * held, what="more frames go by")
        held_bytes = buffer.nbytes
        out = io.StringIO()
        command = ["events", "flag-missed", "--state-dir", str(tmp_path / "state"), "--seconds", "60", "--json"]
        with contextlib.redirect_stdout(out):
            assert main([*command, *(["--note", note] if note else [])]) == 0
    finally:
        daemon.stop()
    return {**json.loads(out.getvalue()), "held_bytes": held_bytes}
