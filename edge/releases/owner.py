"""Run `crackd models` as the owner of the state directory, never as root inside it.

On a device the state directory belongs to the service user (deploy/install.sh: `crackd`, 0750), and
crack-deploy or a technician runs `sudo crackd models stage|activate|rollback`. Root writing there left
root-owned `models/`, `releases/`, `.lock`, `deployments.jsonl` and links that the service user (and a
later non-root `crackd models`) could not change.

The command drops to the directory's owner before touching it, rather than chowning what it made:
- everything it creates is the owner's by construction, including files added later and what a command
  killed half-way leaves (a chown after the fact misses both);
- root never follows a link in a directory the service user can write (a link planted at
  models/deployments.jsonl would otherwise have root append to any file on the system);
- the daemon runs as that user, so SIGHUP still reaches it.
The price: the bundle to stage must be readable by that user (crack-deploy uploads it 0755/0644 to /tmp).

Files an older crackd left owned by root under models/ are given to the owner once, before dropping.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from edge.layout import StateLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StateOwner:
    uid: int
    gid: int
    name: str  # the user name, or the uid as text where the system has no such user


def state_owner(state_dir: Path) -> StateOwner:
    st = os.stat(state_dir)
    try:
        name = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        name = str(st.st_uid)
    return StateOwner(st.st_uid, st.st_gid, name)


def become_state_owner(state_dir: Path) -> StateOwner | None:
    """When root works on a state directory another user owns: give that user what root left under models/,
    then switch this process to the owner's uid and gid for good. Returns the owner switched to, else None."""
    if os.geteuid() != 0:
        return None
    owner = state_owner(state_dir)
    if owner.uid == 0:
        return None
    _give_back_root_files(StateLayout(Path(state_dir)).models, owner)
    try:
        os.initgroups(owner.name, owner.gid)  # the owner's groups (crackd: video), as under systemd
    except (KeyError, OSError):
        os.setgroups([])  # a uid with no passwd entry: no supplementary groups
    os.setgid(owner.gid)
    os.setuid(owner.uid)  # real, effective and saved: no way back to root
    log.debug("running as %s (uid %d), the owner of %s", owner.name, owner.uid, state_dir)
    return owner


def _give_back_root_files(models: Path, owner: StateOwner) -> None:
    """lchown root-owned entries under `models` to `owner`. fwalk works on directory fds and never follows a
    link, so a link swapped in meanwhile cannot make root chown anything outside."""
    if not models.is_dir() or models.is_symlink():
        return
    top = os.open(models, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if os.fstat(top).st_uid == 0:
            os.fchown(top, owner.uid, owner.gid)
    finally:
        os.close(top)
    for _root, dirs, files, dir_fd in os.fwalk(models, follow_symlinks=False):
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile: nothing to give back
                if os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_uid == 0:
                    os.chown(name, owner.uid, owner.gid, dir_fd=dir_fd, follow_symlinks=False)
