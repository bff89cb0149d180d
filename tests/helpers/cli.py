"""The project's commands run as a user runs them: a child process of this interpreter, output captured as text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import REPO


def run_module(
    module: str, *args: str, cwd: Path = REPO, env: dict | None = None, timeout: float = 60, check: bool = False
) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` (edge.cli, deploy.cli, trainer.cli)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def crackd(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """`crackd ARGS` (see `run_module` for the keyword arguments)."""
    return run_module("edge.cli", *args, **kwargs)
