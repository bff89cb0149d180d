"""Journal writes held while the disk is full, and a reserved file that keeps them across a stop.

When SQLite cannot write (disk full), the journal writer (edge.daemon.journal_writer) holds event
writes (event rows and their MQTT messages) in memory and retries them. A stop must not lose them,
and a full disk has no room for a new file, so at start crackd reserves `RESERVE_BYTES` of zeros
(`STATE/held-writes.reserve`) while there is room. On a stop with writes still held they are written
INTO that file, over its own blocks (no new space needed), and read back at the next start. The same budget bounds what
is held in memory, so whatever is held always fits; a write beyond it is refused loudly.
Opening the journal on a full disk has a smaller reserve of its own (`OPEN_RESERVE_BYTES`,
`STATE/journal-open.reserve`, released to make room for SQLite's -shm and -wal files), so a start
on a full disk keeps this one for what it holds. Only if the journal cannot open even then is this
reserve the emergency room: its content is read, the file is removed, and the journal gets its space.
Whether a detection can be kept at all is the journal writer's question (JournalWriter.not_keeping_reason):
without this reserve nothing held survives a stop, so the pipeline takes no frame until it exists again.

File format: one JSON document (`{"version": 1, "items": [...]}`) followed by zero bytes.
Frame-only results are not detections and are never held here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

from edge.atomic_write import write_bytes_atomic
from edge.events.decision import EventRecord
from edge.events.journal import EventWrite, OutboxMessage

log = logging.getLogger(__name__)

RESERVE_BYTES = 1024 * 1024
OPEN_RESERVE_BYTES = 256 * 1024  # SQLite's -shm (32 KB) and the first pages of the WAL, with room to spare
FORMAT_VERSION = 1
# A held write: (frame rows, event writes, outbox messages), as Journal.record takes them.
HeldItem = tuple


def encode(item: HeldItem) -> dict:
    """The event writes and messages of a held item as plain JSON (frame rows are left out)."""
    _rows, writes, messages = item
    return {
        "events": [
            {
                **{f.name: getattr(w, f.name) for f in dataclasses.fields(w) if f.name != "record"},
                "record": dataclasses.asdict(w.record),
            }
            for w in writes
        ],
        "messages": [dataclasses.asdict(m) for m in messages],
    }


def decode(doc: dict) -> HeldItem:
    writes = [EventWrite(**{**w, "record": EventRecord(**w["record"])}) for w in doc["events"]]
    return ([], writes, [OutboxMessage(**m) for m in doc["messages"]])


def without_pictures(item: HeldItem) -> tuple[HeldItem, int]:
    """The item less its picture messages (bytes payloads: snapshots over MQTT), and how many were removed.

    Pictures are shed first while the disk is full: they are large, and the event messages name them only
    as a reference the consumer can do without."""
    rows, writes, messages = item
    kept = [m for m in messages if not isinstance(m.payload, (bytes, bytearray))]
    return (rows, writes, kept), len(messages) - len(kept)


def encoded_size(item: HeldItem) -> int:
    """Bytes this item takes in the reserve file (what bounds the memory held too)."""
    return len(json.dumps(encode(item), separators=(",", ":"))) + 1


class Reserve:
    """The reserved file: zeros when empty, the held writes of the last stop otherwise."""

    def __init__(self, path: Path, size: int = RESERVE_BYTES, purpose: str = "held journal writes"):
        """`purpose`: what the space is kept for, in log lines."""
        self.path = Path(path)
        self.size = size
        self.purpose = purpose
        self.present = False  # the file is there at full size (as far as ensure/release know)

    @property
    def capacity(self) -> int:
        """Bytes available to held items (the JSON wrapper takes a few)."""
        return self.size - 64

    def ensure(self) -> bool:
        """Create the zero-filled file if it is missing or short; False (logged) when there is no room."""
        self.present = self._ensure(quiet=False)
        return self.present

    def ensure_quietly(self) -> bool:
        """`ensure` for retries while the disk is full: no attempt (no write) without room, no log line."""
        if not self.present:
            self.present = self._ensure(quiet=True)
        return self.present

    def _ensure(self, quiet: bool) -> bool:
        try:
            if self.path.exists() and self.path.stat().st_size >= self.size:
                return True
            if quiet and shutil.disk_usage(self.path.parent).free < 2 * self.size:
                return False  # not even worth the SD card's wear of a write that must fail
            write_bytes_atomic(self.path, bytes(self.size))
            if quiet:
                log.info("%s: reserved %d KB for %s again", self.path, self.size // 1024, self.purpose)
            return True
        except OSError as exc:
            if not quiet:
                log.warning(
                    "cannot reserve %d KB for %s at %s (%s)",
                    self.size // 1024,
                    self.purpose,
                    self.path,
                    exc.strerror or exc,
                )
            return False

    def load(self) -> list[HeldItem]:
        """Items saved by the last stop ([] when none); an unreadable file is reported, not fatal."""
        try:
            data = self.path.read_bytes().rstrip(b"\0")
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.error("cannot read held journal writes from %s (%s)", self.path, exc.strerror)
            return []
        if not data.strip():
            return []
        try:
            doc = json.loads(data)
            if doc.get("version") != FORMAT_VERSION:
                raise ValueError(f"format version {doc.get('version')!r}, expected {FORMAT_VERSION}")
            return [decode(d) for d in doc["items"]]
        except (ValueError, KeyError, TypeError) as exc:
            log.error("held journal writes in %s are unreadable (%s); moved to %s.bad", self.path, exc, self.path)
            os.replace(self.path, Path(f"{self.path}.bad"))
            return []

    def save(self, items: list[HeldItem]) -> int:
        """Write items over the reserved blocks (no new space needed); returns how many were saved."""
        docs, used = [], 0
        for item in items:
            doc = encode(item)
            n = len(json.dumps(doc, separators=(",", ":"))) + 1
            if used + n > self.capacity:
                break
            docs.append(doc)
            used += n
        data = json.dumps({"version": FORMAT_VERSION, "items": docs}, separators=(",", ":")).encode()
        fd = os.open(self.path, os.O_WRONLY)
        try:
            written = os.pwrite(fd, data, 0)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)
        return len(docs)

    def clear(self) -> None:
        """Zero the used part again (in place) once the items are in the journal."""
        if not self.path.exists():
            return
        try:
            used = len(self.path.read_bytes().rstrip(b"\0"))
            if used:
                fd = os.open(self.path, os.O_WRONLY)
                try:
                    os.pwrite(fd, bytes(used), 0)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            log.error(
                "cannot clear %s (%s); its writes, already journalled, would be written again at the next "
                "start (consumers drop the duplicates by uuid and revision)",
                self.path,
                exc.strerror,
            )

    def release(self) -> int | None:
        """Remove the file to give its space back (disk full at start); returns the bytes freed."""
        self.present = False
        try:
            size = self.path.stat().st_size
            self.path.unlink()
            return size
        except OSError:
            return None
