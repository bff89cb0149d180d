"""The daemon's only writer of the journal: batches frame results, and never loses an event write to a full disk.

An SD card wears with every commit, so frame-only results are committed together (one
transaction per FRAME_BATCH_S or FRAME_BATCH_ROWS). Event writes (an event row and its MQTT
messages, one transaction) go out at once. When SQLite cannot write (disk full, I/O error) event
writes are held in memory in order and retried before anything newer, within the byte budget of
the reserve file (edge.daemon.held_writes) that keeps them across a stop; beyond it a write is
refused with an ERROR line and a count, never silently. Frame results are not detections:
while the journal fails they are dropped and counted.

A detection is kept when the journal takes it, or when the held-writes reserve can keep it across a
stop. `not_keeping_reason` says when neither is sure (no reserve on the disk, or the held writes
near its budget): the supervisor then takes no frame until space returns (edge.daemon.detection_gate).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable

from edge.config import Config
from edge.daemon.held_writes import OPEN_RESERVE_BYTES, HeldItem, Reserve, encoded_size, without_pictures
from edge.daemon.rate_limited_log import RateLimitedLog
from edge.events.decision import END
from edge.events.journal import EventWrite, FrameRow, Journal, JournalUnavailable, OutboxMessage

log = logging.getLogger(__name__)

FRAME_BATCH_S = 1.0  # frame-only results are committed together at most this late ...
FRAME_BATCH_ROWS = 200  # ... or when this many are waiting
HELD_WRITES_MAX = 10000  # event writes held in memory while the journal cannot be written (also bounded by bytes)
# Room the held writes must leave in their reserve for a frame to be taken while the journal fails: one frame's
# event writes and messages (pictures are shed) take 1-3 KB, and the stop's closing of the open event one more.
HOLD_HEADROOM = 16 * 1024


class JournalWriter:
    """Owns the journal connection, the frame-row batch, the held event writes and the reserve file."""

    def __init__(self, cfg: Config, on_messages: Callable[[], None] | None = None):
        """`on_messages`: called after a transaction with outbox messages was committed (wakes the publisher)."""
        self.cfg = cfg
        self.reserve = Reserve(cfg.layout.held_writes_reserve)
        self.open_reserve = Reserve(cfg.layout.journal_open_reserve, OPEN_RESERVE_BYTES, "opening the journal")
        self._journal: Journal | None = None
        self._on_messages = on_messages
        self._held: deque[tuple[HeldItem, int]] = deque()  # (item, encoded bytes): never dropped silently (see _hold)
        self._held_bytes = 0
        self._frame_rows: list[FrameRow] = []
        self._frame_rows_since = time.monotonic()
        self.frames_recorded = 0
        self.write_failures = 0  # transactions that failed (held and retried, or dropped frame rows)
        self.writes_dropped = 0  # event writes refused while held writes filled their budget (logged as errors)
        self.frame_rows_dropped = 0  # frame-only results not saved while the journal failed (logged as errors)
        self.outbox_depth = 0  # as last counted by refresh_outbox_depth (once a second)
        # One limiter per kind of failure, so shed pictures cannot hide the journal's error (or the reverse).
        self._journal_log = RateLimitedLog(log)
        self._picture_log = RateLimitedLog(log)

    # ------------------------------------------------------------------ open / close

    def open(self) -> None:
        """Open the journal and write what the last stop held on a full disk.

        Raises JournalError, OSError or sqlite3.Error (the supervisor's start turns them into one line)."""
        held = self.reserve.load()  # writes a stop on a full disk kept for us
        self._journal = self._open_journal()
        if held:
            log.warning(
                "%d journal writes held by the last run (disk full at its stop) read from %s",
                len(held),
                self.reserve.path,
            )
            for item in held:
                self._hold(item)
            self.retry_held()
            if self._held and self.reserve.release():
                # Still full: the reserve's own space makes room to journal them (journalled beats held in memory).
                log.error(
                    "%s: the disk is still full: removed the reserve to journal the held writes", self.reserve.path
                )
                self.retry_held()
            if not self._held:
                self.reserve.clear()
                log.info("held journal writes of the last run are in the journal now")
        if not self.reserve.ensure():  # the reserve first: it keeps detections, the other only opens the journal
            log.error("%s: without it, no detection is taken while the disk is full", self.reserve.path)
        self.open_reserve.ensure()

    def _open_journal(self) -> Journal:
        """The journal; on a disk too full to open it (SQLite needs room for its -shm file) a reserve makes room:
        the one kept for opening, and only if that is not enough the held-writes reserve (read already)."""
        cfg = self.cfg
        for reserve in (self.open_reserve, self.reserve):
            try:
                return Journal(cfg.db_path, on_corrupt=cfg.storage.on_corrupt_db)
            except JournalUnavailable as exc:
                freed = reserve.release()
                if not freed:
                    continue
                log.error(
                    "%s; the disk is full: removed the %d KB reserve %s so the journal can open and the outbox drain",
                    exc,
                    freed // 1024,
                    reserve.path,
                )
        return Journal(cfg.db_path, on_corrupt=cfg.storage.on_corrupt_db)

    def close(self) -> None:
        """At a stop: commit the batched frame rows, retry the held writes, save what is still held into the reserve."""
        self.flush_frame_rows()
        self.retry_held()
        if self._held:
            self._save_held()

    def close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()

    def _save_held(self) -> None:
        items = [item for item, _ in self._held]
        write_error = self._journal.write_error if self._journal is not None else None
        try:
            saved = self.reserve.save(items)
        except OSError as exc:
            log.error(
                "%d held journal writes (events and their MQTT messages) are LOST: the journal cannot be "
                "written (%s) and neither can %s (%s)",
                len(items),
                write_error,
                self.reserve.path,
                exc.strerror or exc,
            )
            return
        log.warning(
            "the journal cannot be written (%s): %d held event writes saved to %s; they are journalled at "
            "the next start",
            write_error,
            saved,
            self.reserve.path,
        )
        if saved < len(items):
            log.error("%d held journal writes did not fit in %s and are LOST", len(items) - saved, self.reserve.path)

    # ------------------------------------------------------------------ state others report

    @property
    def journal(self) -> Journal:
        """The open journal (the publisher drains its outbox, retention prunes it, the snapshot store asks it)."""
        if self._journal is None:
            raise RuntimeError("the journal is not open yet")
        return self._journal

    @property
    def held(self) -> int:
        """Event writes held in memory (the journal could not take them yet)."""
        return len(self._held)

    def held_event_ends(self) -> set[str]:
        """The uuids of events whose end is among the held writes."""
        return {w.record.uuid for item, _ in self._held for w in item[1] if w.record.kind == END}

    @property
    def blocked(self) -> bool:
        """The journal cannot take writes now (failing, or writes held): pictures are not worth their disk space."""
        return bool(self._held) or bool(self._journal is not None and self._journal.write_error)

    def problem(self) -> str | None:
        """Why the journal is not healthy (writes failing or held, writes dropped), or None."""
        error = self._journal.write_error if self._journal is not None else None
        if not error and not self._held and not self.writes_dropped:
            return None
        parts = [error or "writable again"]
        if self._held:
            parts.append(f"{len(self._held)} event writes held in memory")
        if self.writes_dropped:
            parts.append(f"{self.writes_dropped} event writes dropped")
        return "; ".join(parts)

    def not_keeping_reason(self) -> str | None:
        """Why a detection taken now might be lost (so no frame should be taken), or None when it would be kept.

        Kept means: journalled, or held within the reserve that keeps held writes across a stop. Cheap enough
        to ask before every frame (no system call)."""
        if not self.reserve.present:
            return (
                f"not keeping detections: no room on the disk for {self.reserve.path.name} "
                f"({self.reserve.size // 1024} KB), which keeps detections across a stop while the journal cannot "
                "be written"
            )
        if self.blocked and self.reserve.capacity - self._held_bytes < HOLD_HEADROOM:
            error = self._journal.write_error if self._journal is not None else None
            return (
                f"not keeping detections: the journal cannot be written ({error or 'writes held'}) and "
                f"the writes held meanwhile fill their {self.reserve.size // 1024} KB reserve"
            )
        return None

    def make_room_again(self) -> None:
        """While detections are not kept: journal what is held (first: the journal gets the space), then make the
        reserves again once there is room for them."""
        self.retry_held()
        if self.reserve.ensure_quietly():
            self.open_reserve.ensure_quietly()

    def refresh_outbox_depth(self) -> int:
        if self._journal is not None and self._journal.is_open:
            self.outbox_depth = self._journal.outbox_depth()
        return self.outbox_depth

    # ------------------------------------------------------------------ writing

    def write(self, frame_row: FrameRow | None, writes: list[EventWrite], messages: list[OutboxMessage]) -> None:
        """A frame's result: its frame row is batched; event writes and messages are committed now, with the batch."""
        if frame_row is not None:
            self._frame_rows.append(frame_row)
        if not writes and not messages:
            # Frame-only results are batched (one transaction per FRAME_BATCH_S): SD cards wear with every commit.
            if self._frame_rows and (
                len(self._frame_rows) >= FRAME_BATCH_ROWS or time.monotonic() - self._frame_rows_since >= FRAME_BATCH_S
            ):
                self.flush_frame_rows()
            return
        rows, self._frame_rows = self._frame_rows, []
        self._frame_rows_since = time.monotonic()
        self.write_events((rows, writes, messages))

    def write_events(self, item: HeldItem) -> None:
        """One transaction of (frame rows, event writes, messages), after everything held (nothing overtakes it)."""
        rows, _writes, messages = item
        if self._held:  # keep the order: nothing overtakes what is already held
            self.retry_held()
        if self._held:
            self._hold(item)
            return
        try:
            self.journal.record(*item)
            self.frames_recorded += len(rows)
        except sqlite3.Error as exc:
            self.write_failures += 1
            self._hold(item)
            self._journal_log(
                logging.ERROR,
                "journal %s: write failed (%s); %d event writes held in memory and retried",
                self.cfg.db_path,
                exc,
                len(self._held),
            )
            return
        if messages and self._on_messages is not None:
            self._on_messages()

    def flush_frame_rows_if_due(self) -> None:
        """While no frame arrives: commit the batch once it is FRAME_BATCH_S old."""
        if self._frame_rows and time.monotonic() - self._frame_rows_since >= FRAME_BATCH_S:
            self.flush_frame_rows()

    def flush_frame_rows(self) -> None:
        rows, self._frame_rows = self._frame_rows, []
        self._frame_rows_since = time.monotonic()
        if not rows:
            return
        try:
            self.journal.record(rows)
            self.frames_recorded += len(rows)
        except sqlite3.Error as exc:  # frame results are not detections: dropped (counted), not held
            self.write_failures += 1
            self.frame_rows_dropped += len(rows)
            self._journal_log(
                logging.ERROR,
                "journal %s: write of %d frame results failed (%s); dropped (%d so far)",
                self.cfg.db_path,
                len(rows),
                exc,
                self.frame_rows_dropped,
            )

    def retry_held(self) -> None:
        while self._held:
            item, size = self._held[0]
            try:
                self.journal.record(*item)
            except sqlite3.Error:
                return
            self._held.popleft()
            self._held_bytes -= size
            self.frames_recorded += len(item[0])
            if item[2] and self._on_messages is not None:
                self._on_messages()
            if not self._held:
                log.warning("journal %s writable again: every held write is saved", self.cfg.db_path)

    def _hold(self, item: HeldItem) -> None:
        """Hold an event write in memory, within the reserve's budget (so a stop can save all of it).

        Beyond the budget the write is refused: an ERROR line and a count in stats, never a silent drop.
        Its frame rows are kept only as long as the held item is (they are not saved at a stop).
        """
        item, pictures = without_pictures(item)
        if pictures:
            self._picture_log(
                logging.WARNING,
                "journal cannot be written: %d snapshot picture(s) for MQTT not kept (events before pictures)",
                pictures,
            )
        rows, writes, messages = item
        if not writes and not messages:
            self.frame_rows_dropped += len(rows)
            self._journal_log(
                logging.ERROR,
                "journal cannot be written: %d frame results dropped (%d so far)",
                len(rows),
                self.frame_rows_dropped,
            )
            return
        size = encoded_size(item)
        if len(self._held) >= HELD_WRITES_MAX or self._held_bytes + size > self.reserve.capacity:
            self.writes_dropped += 1
            log.error(
                "journal cannot be written and %d held writes fill their %d KB budget: event %s (%s) and its "
                "MQTT message are NOT recorded (%d dropped so far)",
                len(self._held),
                self.reserve.capacity // 1024,
                writes[0].record.uuid if writes else "?",
                writes[0].record.kind if writes else "message",
                self.writes_dropped,
            )
            return
        self._held.append((item, size))
        self._held_bytes += size
