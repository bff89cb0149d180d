"""scripts/pi-smoke.sh says at once what it needs from the host, instead of failing an hour later.

Its step 6 makes the reference model with TensorFlow on the host; without it the script stops before doing anything,
in one line that says how to give it a Python that has it (sudo drops PYTHON=..., hence --python).
"""

from __future__ import annotations

import subprocess

from tests.helpers import REPO
from tests.helpers.without_tensorflow import python


def test_a_host_python_without_tensorflow_is_refused_up_front(tmp_path):
    cache = tmp_path / "cache"
    r = subprocess.run(
        [str(REPO / "scripts" / "pi-smoke.sh"), "--python", str(python(tmp_path)), "--cache", str(cache)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "cannot import tensorflow" in r.stderr and "--python PY" in r.stderr
    assert r.stdout == "" and not cache.exists()  # nothing started, nothing made
