"""A device for the deploy tests: a state directory with a release installed and a real `crackd run` daemon."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edge.daemon_status import DaemonStatus
from edge.releases.manager import ReleasePolicy, Releases
from tests.helpers.daemon import terminate
from tests.helpers.paths import REPO
from tests.helpers.status import read_status
from tests.helpers.waiting import wait_until


class Device:
    """A device state directory with a running `crackd run` daemon (synthetic camera, MQTT off)."""

    def __init__(self, root: Path, initial_bundle: Path, signer_keys, pythonpath: Path = REPO, start: bool = True):
        self.root = root
        self.state = root / "state"
        self.state.mkdir(parents=True, exist_ok=True)  # it may hold an earlier run's journal
        rel = self.releases(signer_keys)
        self.initial = rel.activate(rel.stage(initial_bundle, who="factory").version, who="factory").version
        self.config = root / "crackd.yaml"
        self.config.write_text(
            "device_id: test-pi\n"
            "source:\n  type: synthetic\n  synthetic: {fps: 5, width: 160, height: 120, seed: 1}\n"
            f"storage:\n  state_dir: {self.state}\n  snapshots: false\n"
            "mqtt:\n  enabled: false\n"
            "logging:\n  journald: false\n"
            f"releases:\n  require_signature: true\n  allowed_signers: {signer_keys.allowed_signers}\n  keep: 3\n"
        )
        self.pythonpath = pythonpath
        self.signer_keys = signer_keys
        self.proc = None
        self.log = None
        if start:
            self.start()

    def releases(self, signer_keys=None) -> Releases:
        keys = signer_keys or self.signer_keys
        return Releases(
            self.state, ReleasePolicy(require_signature=True, allowed_signers=keys.allowed_signers, latency_runs=1)
        )

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(self.pythonpath))
        self.log = open(self.root / "daemon.log", "a")  # noqa: SIM115  (the daemon writes to it until stop() closes it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(self.config)],
            cwd=self.root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.wait_serving(self.releases().current_version(), timeout=30)

    def status(self) -> DaemonStatus:
        return read_status(self.state)

    def wait_serving(self, version: str, timeout: float = 20) -> DaemonStatus:
        def serving():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited {self.proc.returncode}: {(self.root / 'daemon.log').read_text()[-2000:]}"
                )
            st = self.status()
            return st if st.pid == self.proc.pid and st.bundle_version == version and st.healthy else None

        return wait_until(serving, timeout, f"the daemon to serve {version} healthily", interval=0.1)

    def history(self) -> list[dict]:
        return self.releases().history()

    def stop(self) -> None:
        if self.proc:
            terminate(self.proc)
        if self.log:
            self.log.close()
