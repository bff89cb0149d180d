"""Reading a daemon's status.json from outside, as a monitoring script would (tests and tools/soak.py)."""

from __future__ import annotations

import json
from pathlib import Path


def read_status(state: Path) -> dict:
    """The daemon's last status.json under the state directory `state`; {} before the first one (or mid-replace)."""
    try:
        return json.loads((Path(state) / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
