"""Files and links that readers must never see half-made, and that survive a power cut once written.

Every write goes to a temporary beside the target, is fsync'd, renamed over the target, and then the
directory is fsync'd: on an SD card a rename that is not yet on disk can come back after a power cut
as a zero-length file or the old link. One helper for every file the daemon and the release manager
replace (status.json, snapshots, the deploy lock holder, signatures, the held-writes reserve), one for links.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace `path` with `data`: readers see the old file or the new one, never a part.

    `mode` sets the permission bits of the new file (default: the umask's). A failure (a full disk)
    removes the temporary and raises.
    """
    path = Path(path)
    tmp = path.with_name(
        f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    )  # one per writing process and thread
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not collect half-written temporaries
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, data: dict) -> None:
    """`data` as indented JSON, written with `write_bytes_atomic`."""
    write_bytes_atomic(path, (json.dumps(data, indent=1) + "\n").encode())


def replace_symlink(link: Path, target: str, before_rename: Callable[[], None] | None = None) -> None:
    """Make `link` a symlink to `target` atomically: a new symlink renamed over the old one.

    `before_rename` runs once the new link exists (a fault-injection point, edge.releases.faults). A writer killed
    there leaves `.NAME.tmp-PID` beside `link` (`temporary_links` finds them)."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    if before_rename is not None:
        before_rename()
    os.replace(tmp, link)
    fsync_dir(link.parent)


def temporary_links(link: Path) -> list[Path]:
    """The new links `replace_symlink(link, ...)` made and never renamed (their writer was killed)."""
    return [p for p in link.parent.glob(f".{link.name}.tmp-*") if p.is_symlink()]
