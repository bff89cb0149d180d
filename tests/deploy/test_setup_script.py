"""scripts/setup.sh on a bare machine: every tool the README's Quick start uses comes from a package it installs.

The script runs for real in a copy of the scripts folder, as root, with a PATH holding only the basic tools it
needs and recording stand-ins for apt-get and Python (so nothing is installed on the machine running the tests).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.helpers import REPO


def _run_setup(tmp_path, extra_tools: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """setup.sh in a copy of the scripts folder, PATH holding only bash basics and the given stand-ins (name -> body);
    apt-get records its arguments in apt-get.log."""
    root = tmp_path / "clone"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "id", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    stand_ins = {
        "apt-get": f'echo "$*" >> {tmp_path / "apt-get.log"}',
        "python3": "exit 0",  # venv and ensurepip "importable"; pip a no-op
        **(extra_tools or {}),
    }
    (root / ".venv" / "bin").mkdir(parents=True)
    scripts = {bin_dir / name: body for name, body in stand_ins.items()}
    scripts[root / ".venv" / "bin" / "python"] = "exit 0"
    for script, body in scripts.items():
        script.write_text(f"#!/bin/bash\n{body}\n")
        script.chmod(0o755)
    return subprocess.run(
        [str(bin_dir / "bash"), str(root / "scripts" / "setup.sh")],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="setup.sh installs Debian packages only as root")
def test_setup_installs_mosquitto_clients_for_the_quick_starts_mosquitto_sub(tmp_path):
    assert "mosquitto_sub" in (REPO / "README.md").read_text()
    r = _run_setup(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    log = tmp_path / "apt-get.log"
    installs = [line.split() for line in log.read_text().splitlines() if line.startswith("install")]
    assert installs and "mosquitto-clients" in installs[-1]


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root setup.sh could stop a service")
def test_setup_never_stops_a_running_service(tmp_path):
    """A user's mosquitto (or node_exporter) service keeps running: the demo and the tests bring their own."""
    calls = tmp_path / "systemctl.log"
    r = _run_setup(tmp_path, {"systemctl": f'echo "$*" >> {calls}; exit 0'})  # every unit "active"
    assert r.returncode == 0, r.stdout + r.stderr
    made = calls.read_text().splitlines() if calls.exists() else []
    assert not [c for c in made if c.split()[:1] in (["stop"], ["disable"], ["kill"], ["mask"])], made
