"""Which releases a device keeps: the current one, the previous one (for rollback), and `keep` in all besides it."""

from __future__ import annotations

import logging
import os
import shutil

from edge.atomic_write import fsync_dir
from edge.layout import StateLayout
from edge.releases.faults import kill_point
from edge.releases.inventory import link_version, release_dirs

log = logging.getLogger(__name__)


def prune(layout: StateLayout, keep: int) -> list[str]:
    """Delete the oldest releases beyond `keep` besides current (previous always kept). Call with the lock held.

    A release is first renamed to `.<version>.removing`, which is no release name, and deleted after: a command
    killed while deleting leaves no half-deleted release that `list` shows or `activate` could pick
    (edge.releases.staging.remove_leftovers finishes the job)."""
    current, previous = link_version(layout.current), link_version(layout.previous)
    others = [p for p in release_dirs(layout) if p.name not in (current, previous)]
    others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    budget = max(0, keep - (1 if previous and previous != current else 0))
    removed = []
    for path in others[budget:]:
        doomed = path.with_name(f".{path.name}.removing")
        os.rename(path, doomed)
        fsync_dir(layout.releases)
        kill_point("pruning")
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(path.name)
        log.info("pruned release %s (keeping %d besides current)", path.name, keep)
    kill_point("pruned")
    return removed
