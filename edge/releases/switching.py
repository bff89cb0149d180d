"""Switching models/current (and previous) so that `kill -9` at any step leaves one verified release current,
and the next command undoes what the killed one began.

A switch, step by step (each a kill point of edge.releases.faults, tested one by one):

    intent-written      models/switch.json: what is about to change and what it was (the undo record)
    previous-switched   previous -> the release being replaced (a new link renamed over the old: atomic)
    current-switched    current -> the new release; the daemon's next load serves it
    daemon-signalled    SIGHUP: the daemon reloads, verifying the bundle before it swaps
    recorded            deployments.jsonl
    committed           switch.json removed: from here on the switch stands

A command that finds switch.json holds the lock, so its writer is dead: it puts both links back as recorded,
SIGHUPs the daemon when `current` changed back, records the switch as `interrupted` and removes the record. The
killed command, run again, then makes its whole switch (undoing rather than finishing keeps a rerun of `rollback`
from swapping twice). Links always name releases that passed staging, so whatever the step, what is current is a
verified bundle, and the daemon (which verifies again at every load) serves it once signalled or restarted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from edge.atomic_write import fsync_dir, replace_symlink, temporary_links, write_json_atomic
from edge.layout import StateLayout
from edge.releases.answers import DaemonSignal, SwitchResult
from edge.releases.daemon_watch import signal_daemon
from edge.releases.errors import ReleaseError
from edge.releases.faults import kill_point
from edge.releases.history import DeploymentHistory
from edge.releases.inventory import link_version
from edge.timestamps import iso_utc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwitchIntent:
    """models/switch.json: a switch under way, and the links as they were before it."""

    action: str
    version: str
    from_version: str | None  # `current` before
    previous_before: str | None  # `previous` before
    who: str
    at: str
    pid: int

    def write(self, path: Path) -> None:
        write_json_atomic(path, dataclasses.asdict(self))

    @classmethod
    def read(cls, path: Path) -> SwitchIntent | None:
        try:
            data = json.loads(path.read_text())
            return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:  # written atomically: only a hand could damage it
            raise ReleaseError(
                f"{path}: not a switch record ({exc}); check models/current and models/previous, then delete it"
            ) from None


def _point(link: Path, version: str) -> None:
    replace_symlink(link, f"releases/{version}", before_rename=lambda: kill_point(f"{link.name}-link-made"))
    kill_point(f"{link.name}-switched")


def switch(
    layout: StateLayout, history: DeploymentHistory, action: str, version: str, who: str, reason: str | None
) -> SwitchResult:
    """Make release `version` current (the one current so far becomes previous), SIGHUP the daemon, record it.
    Call with the lock held, after `undo_interrupted`."""
    at = iso_utc(time.time())
    old, previous = link_version(layout.current), link_version(layout.previous)
    switching = old != version
    if switching:
        SwitchIntent(action, version, old, previous, who, at, os.getpid()).write(layout.switch_intent)
        kill_point("intent-written")
        if old and layout.release(old).is_dir():
            _point(layout.previous, old)
        _point(layout.current, version)
        log.info("%s: current -> %s (was %s)", action, version, old)
        daemon = signal_daemon(layout)
        kill_point("daemon-signalled")
    else:
        daemon = DaemonSignal(signalled=False, message=f"{version} is already current")
    outcome = "activated" if action == "activate" else "rolled back"
    history.record(action, version, outcome, who, from_version=old, reason=reason, daemon=daemon.message)
    kill_point("recorded")
    if switching:
        layout.switch_intent.unlink()
        fsync_dir(layout.models)
        kill_point("committed")
    return SwitchResult(action, version, old, at, daemon)


def _restore(layout: StateLayout, link: Path, version: str | None) -> None:
    if version is None:
        if link.is_symlink():
            link.unlink()
            fsync_dir(link.parent)
    elif link_version(link) != version and layout.release(version).is_dir():
        replace_symlink(link, f"releases/{version}")


def undo_interrupted(layout: StateLayout, history: DeploymentHistory) -> SwitchIntent | None:
    """Put back what a killed activate/rollback began (see the module docstring); the intent undone, else None.
    Call with the lock held."""
    for link in (layout.current, layout.previous):
        for tmp in temporary_links(link):
            tmp.unlink(missing_ok=True)
    intent = SwitchIntent.read(layout.switch_intent)
    if intent is None:
        return None
    was = link_version(layout.current)
    _restore(layout, layout.previous, intent.previous_before)
    _restore(layout, layout.current, intent.from_version)
    daemon = signal_daemon(layout) if was != intent.from_version else None
    message = (
        f"{intent.action} {intent.version} by pid {intent.pid} stopped half-way; "
        f"undone: models/current is {intent.from_version or 'none'} again"
    )
    log.warning("%s", message)
    history.record(
        intent.action,
        intent.version,
        "interrupted",
        intent.who,
        from_version=intent.from_version,
        message=message,
        daemon=daemon.message if daemon else None,
    )
    layout.switch_intent.unlink()
    fsync_dir(layout.models)
    return intent
