"""What is installed under STATE/models: release directories, the `current`/`previous` links, the version rule.

A release directory is named by its bundle_version, so only names that obey `check_version` are releases; the
manager's own working names (`<v>.staging` while staging, `.<v>.removing` while pruning) never are.
"""

from __future__ import annotations

import re
from pathlib import Path

from edge.engine.bundle import SIGNATURE, BundleError, manifest_sha256, read_manifest
from edge.layout import StateLayout
from edge.releases.answers import InstalledRelease
from edge.releases.errors import ReleaseError
from edge.timestamps import iso_utc

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
STAGING_SUFFIX = ".staging"


class InvalidVersion(ReleaseError):
    pass


def check_version(version: str) -> str:
    """A bundle_version becomes a directory name: letters, digits and . _ + - only."""
    if not VERSION_PATTERN.match(version or "") or version.endswith(STAGING_SUFFIX) or ".." in version:
        raise InvalidVersion(
            f"bundle_version {version!r} cannot name a release directory "
            "(expected letters, digits and . _ + -, at most 64 characters)"
        )
    return version


def is_release_dir(path: Path) -> bool:
    """A directory under releases/ named like a release (not a staging copy or one being removed)."""
    return (
        VERSION_PATTERN.match(path.name) is not None
        and not path.name.endswith(STAGING_SUFFIX)
        and not path.is_symlink()
        and path.is_dir()
    )


def link_version(link: Path) -> str | None:
    """The release version a `current`/`previous` link names, or None when absent."""
    try:
        target = Path(link).readlink()
    except OSError:
        return None
    return target.name


def release_dirs(layout: StateLayout) -> list[Path]:
    if not layout.releases.is_dir():
        return []
    return [p for p in layout.releases.iterdir() if is_release_dir(p)]


def installed(layout: StateLayout) -> list[InstalledRelease]:
    """Installed releases, newest first, with which is current/previous."""
    current, previous = link_version(layout.current), link_version(layout.previous)
    out = []
    for path in release_dirs(layout):
        version, installed_at = path.name, iso_utc(path.stat().st_mtime, "seconds")
        is_current, is_previous = version == current, version == previous
        try:
            manifest = read_manifest(path)
            entry = InstalledRelease(
                version,
                is_current,
                is_previous,
                installed_at,
                created=manifest.created,
                sha256=manifest_sha256(path),
                signed=(path / SIGNATURE).is_file(),
            )
        except BundleError as exc:
            entry = InstalledRelease(version, is_current, is_previous, installed_at, error=str(exc))
        out.append(entry)
    out.sort(key=lambda e: (e.installed_at, e.version), reverse=True)
    return out
