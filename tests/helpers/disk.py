"""Full and read-only disks: a real 8 MB tmpfs where SQLite, snapshots and the pid file meet a real ENOSPC / EROFS.

Mounting needs root; the `small_fs` fixture skips without it (never where the suite runs as root, as CI does).
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def mount_tmpfs(mountpoint: Path, size: str = "8m") -> None:
    """Mount a fresh tmpfs of `size` at the existing directory `mountpoint` (root only)."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)], check=True)


def unmount(mountpoint: Path) -> None:
    """Lazy unmount: succeeds even while a test's leftover handle still holds a file open."""
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def remount(mountpoint: Path, mode: str) -> None:
    """`ro` or `rw` (a read-only remount fails while a file on it is open for writing)."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mountpoint)], check=True)


def fill_disk(mountpoint: Path) -> Path:
    """Fill the file system until ENOSPC with one file; returns it (delete it to give the space back)."""
    filler = mountpoint / "filler"
    with open(filler, "ab", buffering=0) as f:
        for chunk in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    return filler
