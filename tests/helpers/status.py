"""Reading a daemon's status.json from outside, as a monitoring script would (tests and tools/soak.py).

Through edge.daemon_status.DaemonStatus, the one reader: a misspelt field fails the test instead of reading None.
"""

from __future__ import annotations

from pathlib import Path

from edge.daemon_status import DaemonStatus
from edge.layout import StateLayout


def read_status(state: Path) -> DaemonStatus:
    """The daemon's last status.json under the state directory `state`; an empty DaemonStatus (no pid, all counts 0)
    before the first one."""
    try:
        return DaemonStatus.read(StateLayout(Path(state)).status_file)
    except (FileNotFoundError, ValueError):
        return DaemonStatus()
