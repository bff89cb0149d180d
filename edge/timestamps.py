"""ISO 8601 UTC timestamps as crackd writes and reads them ('2024-05-01T12:00:00.123Z')."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def iso_utc(t: float, timespec: str = ...) -> str: ...
@overload
def iso_utc(t: None, timespec: str = ...) -> None: ...
def iso_utc(t: float | None, timespec: str = "milliseconds") -> str | None:
    """Wall-clock seconds -> ISO 8601 UTC with a 'Z' ('seconds' or 'milliseconds' precision); None stays None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_iso(text: str | None) -> float | None:
    """An ISO 8601 time (a 'Z' suffix allowed) -> wall-clock seconds; None when absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
