"""`crack-train` on inputs it cannot use: one line naming what is wrong and a non-zero exit, never a traceback.

Each case runs crack-train as a user does (a child process) in a Python that cannot import TensorFlow or Keras
(tests/helpers/without_tensorflow.py). That proves the inputs are checked before any model is built or trained, keeps
each case cheap, and runs the same on a device-only install.
"""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO
from tests.helpers.without_tensorflow import env


def crack_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer.cli", *args],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(run: subprocess.CompletedProcess, *expected: str) -> str:
    """The run failed with exit 2 and exactly one stderr line holding every `expected` text."""
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    for text in expected:
        assert text in run.stderr, run.stderr
    return run.stderr


def test_a_device_only_install_is_told_which_extra_to_install(tmp_path):
    run = crack_train("reference-model", "--out", str(tmp_path / "ref.tflite"))
    one_line(run, "crack-train reference-model: tensorflow is not installed", "pip install 'crackd[train]'")
