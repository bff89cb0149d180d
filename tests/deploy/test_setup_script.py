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


@pytest.mark.skipif(os.geteuid() != 0, reason="setup.sh installs Debian packages only as root")
def test_setup_installs_mosquitto_clients_for_the_quick_starts_mosquitto_sub(tmp_path):
    assert "mosquitto_sub" in (REPO / "README.md").read_text()
    root = tmp_path / "clone"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "id", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    log = tmp_path / "apt-get.log"
    (bin_dir / "apt-get").write_text(f'#!/bin/bash\necho "$*" >> {log}\n')
    (bin_dir / "python3").write_text("#!/bin/bash\nexit 0\n")  # venv and ensurepip "importable"; pip a no-op
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "python").write_text("#!/bin/bash\nexit 0\n")
    for script in (bin_dir / "apt-get", bin_dir / "python3", root / ".venv" / "bin" / "python"):
        script.chmod(0o755)

    r = subprocess.run(
        [str(bin_dir / "bash"), str(root / "scripts" / "setup.sh")],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert r.returncode == 0, r.stdout + r.stderr
    installs = [line.split() for line in log.read_text().splitlines() if line.startswith("install")]
    assert installs and "mosquitto-clients" in installs[-1]
