"""Fault injection for tests: SIGKILL this process at a named step of a release operation.

`CRACKD_KILL_AT=current-switched crackd models activate V` dies the moment that step is done, as `kill -9` or a
power cut would there. The steps are listed here so that a test goes through every one of them (a step added to
the switch without a name here is a step nobody tested). Unset, as always outside tests, a step costs one
environment lookup.
"""

from __future__ import annotations

import os
import signal

KILL_AT_ENV = "CRACKD_KILL_AT"

# The steps of `crackd models activate` and `rollback`, in order (edge.releases.switching).
SWITCH_STEPS = (
    "locked",  # the device lock is held
    "intent-written",  # models/switch.json says what is about to change
    "previous-link-made",  # the new `previous` link exists beside the old one
    "previous-switched",
    "current-link-made",
    "current-switched",  # the daemon's next load serves the new release
    "daemon-signalled",
    "recorded",  # deployments.jsonl has the line
    "committed",  # switch.json removed: the switch stands
)
# Removing old releases after an activate.
PRUNE_STEPS = ("pruning", "pruned")


def kill_point(step: str) -> None:
    """Die here, by SIGKILL, when $CRACKD_KILL_AT names `step`."""
    if os.environ.get(KILL_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
