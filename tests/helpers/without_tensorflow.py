"""Python as on a device-only install (`pip install crackd[edge]`): TensorFlow and Keras cannot be imported.

`block()` does it in this process (tests/conftest.py, with CRACKD_TEST_WITHOUT_TENSORFLOW=1); `env()` is the
environment of a child process that does it from the start (without_tensorflow_site/sitecustomize.py), and
`python(tmp_path)` a script that runs this interpreter so, for tools that take a Python to run.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from pathlib import Path

from tests.helpers.paths import REPO

TRAINING_ONLY = ("tensorflow", "keras", "tf_keras")
SITE = Path(__file__).with_name("without_tensorflow_site")


class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in TRAINING_ONLY:
            raise ModuleNotFoundError(f"No module named {name!r} (a device-only install)", name=name)
        return None


def block() -> None:
    """From now on, importing TensorFlow or Keras in this process fails as where they are not installed."""
    sys.meta_path.insert(0, NoTensorFlow())


def env() -> dict[str, str]:
    """os.environ for a child Python that cannot import TensorFlow or Keras (and imports this checkout's code)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join((str(SITE), str(REPO)))}


def python(tmp_path: Path) -> Path:
    """An executable that runs this interpreter without TensorFlow (`--python PY` of a script)."""
    script = tmp_path / "python-without-tensorflow"
    script.write_text(f'#!/bin/sh\nPYTHONPATH="{SITE}:{REPO}" exec "{sys.executable}" "$@"\n')
    script.chmod(0o755)
    return script
