"""The SQLite journal, on real files: WAL, migrations with a
backup, integrity check, one-transaction writes, retention."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.events.decision import END, START, EventRecord
from edge.events.journal import (
    MIGRATIONS,
    SCHEMA_VERSION,
    EventWrite,
    FrameRow,
    Journal,
    JournalCorrupt,
    JournalCounts,
    JournalError,
    OutboxMessage,
    integrity_check,
)
from tests.helpers.disk import remount


def record(kind=START, uuid="11111111-2222-3333-4444-555555555555", t=1000.0, score=0.9, area=10):
    return EventRecord(
        kind=kind,
        uuid=uuid,
        revision=0 if kind == START else 1,
        started_at=t,
        t=t,
        ended_at=t if kind == END else None,
        frames=2,
        peak_score=score,
        peak_measurements={"total_area_px": area},
        peak_frame_seq=2,
        first_frame_seq=1,
        last_frame_seq=2,
        end_reason="clear" if kind == END else None,
    )


def event(rec, snapshot=None):
    return EventWrite(rec, "1.0", "ab" * 32, "cam1", snapshot, snapshot and snapshot + ".overlay")


def message(uuid="11111111-2222-3333-4444-555555555555", n=0):
    return OutboxMessage("crackd/cam1/event", {"uuid": uuid, "n": n}, 1, False, uuid)


@pytest.fixture
def journal(tmp_path):
    with Journal(tmp_path / "crackd.db") as j:
        yield j


def test_a_new_journal_uses_wal_and_the_current_schema(journal):
    conn = sqlite3.connect(journal.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"frames", "events", "outbox", "labels"} <= tables


def test_a_detection_and_its_outbox_message_are_one_transaction(journal):
    ids = journal.record(FrameRow(t=1.0, seq=1, crack=True, score=0.9, segmented=True), [event(record())], [message()])
    assert len(ids) == 1 and journal.outbox_depth() == 1
    bad = OutboxMessage("crackd/cam1/event", {"not json": object()})
    with pytest.raises(TypeError):
        journal.record(None, [event(record(uuid="99999999-2222-3333-4444-555555555555"))], [bad])
    # neither the event nor a message of the failed transaction exists
    assert journal.find_event("99999999-2222-3333-4444-555555555555") is None
    assert journal.outbox_depth() == 1


def test_event_records_update_one_row_and_keep_the_snapshot(journal):
    journal.record(None, [event(record(START), snapshot="snapshots/a.jpg")])
    journal.record(None, [event(record(END, area=99))])
    (row,) = journal.list_events()
    assert row.state == "ended" and row.end_reason == "clear"
    assert row.peak_measurements == {"total_area_px": 99}
    assert row.snapshot == "snapshots/a.jpg"


def test_outbox_is_read_in_order_and_rows_go_only_when_acknowledged(journal):
    for n in range(5):
        journal.record(None, [], [message(n=n)])
    rows = journal.outbox_fetch(0, 3)
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    assert journal.outbox_ack([rows[0].id, rows[1].id]) == 2
    assert [r.id for r in journal.outbox_fetch(0, 10)] == [rows[2].id] + [
        r.id for r in journal.outbox_fetch(rows[2].id, 10)
    ]
    assert journal.outbox_depth() == 3


def test_outbox_ids_keep_increasing_after_rows_are_deleted_and_the_file_reopened(tmp_path):
    path = tmp_path / "j.db"
    with Journal(path) as j:
        first = j.record(None, [], [message()])[0]
        j.outbox_ack([first])
    with Journal(path) as j:
        assert j.record(None, [], [message()])[0] > first


def test_an_old_schema_is_backed_up_then_migrated(tmp_path):
    path = tmp_path / "crackd.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO outbox (topic, payload, qos, retain, created_at) VALUES ('t', '{}', 1, 0, 0)")
    conn.commit()
    conn.close()
    with Journal(path) as j:
        assert j.schema_version == SCHEMA_VERSION
        assert j.outbox_depth() == 1
    backup = tmp_path / "crackd.db.v1.bak"
    assert backup.is_file()
    old = sqlite3.connect(backup)
    assert old.execute("PRAGMA user_version").fetchone()[0] == 1
    assert old.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1


def test_a_journal_from_a_newer_crackd_is_refused(tmp_path):
    path = tmp_path / "crackd.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.execute("CREATE TABLE x (a)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="newer crackd"):
        Journal(path)


def _corrupt(path):
    with Journal(path) as j:
        for n in range(200):
            j.record(FrameRow(t=float(n), seq=n, crack=False, score=0.1, segmented=False, ref="x" * 200))
    data = bytearray(path.read_bytes())
    for offset in range(4096, len(data), 4096):  # scribble over every page after the header page
        data[offset + 10 : offset + 400] = b"\xde\xad" * 195
    path.write_bytes(bytes(data))


def test_a_damaged_journal_is_refused_with_a_recovery_hint(tmp_path):
    path = tmp_path / "crackd.db"
    _corrupt(path)
    assert integrity_check(path) is not None
    with pytest.raises(JournalCorrupt, match=r"integrity check failed .*\.recover"):
        Journal(path, on_corrupt="stop")


def test_a_damaged_journal_can_be_moved_aside_and_a_new_one_started(tmp_path):
    path = tmp_path / "crackd.db"
    _corrupt(path)
    with Journal(path, on_corrupt="move-aside") as j:
        assert j.moved_aside is not None and j.moved_aside.exists()
        assert j.counts().frames == 0
    assert integrity_check(path) is None


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "crackd.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalCorrupt):
        Journal(path)


def test_retention_by_age_keeps_labelled_and_undelivered_events(journal):
    old, now = 1000.0, 1000.0 + 40 * 86400
    uuids = [f"0000000{i}-2222-3333-4444-555555555555" for i in range(3)]
    for u in uuids:
        journal.record(
            FrameRow(t=old, seq=1, crack=True, score=0.9, segmented=False, event_uuid=u),
            [event(record(START, uuid=u, t=old), snapshot=f"snapshots/{u}.jpg"), event(record(END, uuid=u, t=old))],
        )
    journal.record(FrameRow(t=now, seq=2, crack=False, score=0.1, segmented=False))
    journal.set_label(uuids[1], "no-crack")
    journal.record(None, [], [message(uuid=uuids[2])])
    report = journal.prune(retention_days=30, max_db_mb=100, now=now)
    assert report.frames == 3 and report.events == 1
    assert report.files == [f"snapshots/{uuids[0]}.jpg", f"snapshots/{uuids[0]}.jpg.overlay"]
    assert {e.uuid for e in journal.list_events()} == set(uuids[1:])


def test_retention_by_size_deletes_the_oldest_frames_first(journal):
    for n in range(3000):
        journal.record(FrameRow(t=float(n), seq=n, crack=False, score=0.1, segmented=False, ref="r" * 300))
    before = journal.used_bytes()
    report = journal.prune(retention_days=10_000, max_db_mb=before / 1024 / 1024 / 2, now=3000.0)
    assert report.frames > 0 and journal.used_bytes() <= before / 2
    oldest = journal._conn.execute("SELECT MIN(seq) FROM frames").fetchone()[0]
    assert oldest >= report.frames - 1


def test_snapshots_are_deleted_unlabelled_first_then_oldest(journal):
    for i, t in enumerate((3.0, 1.0, 2.0)):
        u = f"a000000{i}-2222-3333-4444-555555555555"
        journal.record(None, [event(record(START, uuid=u, t=t), snapshot=f"s{i}.jpg")])
    journal.set_label("a0000001-2222-3333-4444-555555555555", "crack")
    assert journal.snapshot_order() == [
        "s2.jpg.overlay",
        "s2.jpg",
        "s0.jpg.overlay",
        "s0.jpg",
        "s1.jpg.overlay",
        "s1.jpg",
    ]
    journal.forget_snapshot("s2.jpg")
    assert journal.find_event("a0000002").snapshot is None


def test_labels_and_deletes(journal):
    journal.record(
        FrameRow(
            t=1.0, seq=1, crack=True, score=0.9, segmented=False, event_uuid="b0000000-2222-3333-4444-555555555555"
        ),
        [event(record(uuid="b0000000-2222-3333-4444-555555555555"), snapshot="x.jpg")],
    )
    journal.set_label("b0000000-2222-3333-4444-555555555555", "no-crack", "a joint, not a crack")
    found = journal.find_event("b000")
    assert found.label == "no-crack" and found.label_note == "a joint, not a crack"
    assert journal.list_events(label="none") == []
    with pytest.raises(JournalError, match="label must be"):
        journal.set_label(found.uuid, "maybe")
    assert journal.delete_event(found.uuid) == ["x.jpg", "x.jpg.overlay"]
    assert journal.counts() == JournalCounts(frames=0, events=0, outbox=0, labels=0)


def test_an_all_digit_uuid_prefix_finds_its_event_and_a_clash_with_an_id_is_refused(journal):
    digits = "75131411-bbe1-4f0b-b82f-a169d3c6de16"
    journal.record(None, [event(record(uuid=digits))])
    assert journal.find_event("75131411").uuid == digits
    assert journal.find_event("1").uuid == digits
    # "0001" is both id 1 (the first event) and the prefix of a second event's uuid
    journal.record(None, [event(record(uuid="00010000-2222-3333-4444-555555555555"))])
    with pytest.raises(JournalError, match="ambiguous"):
        journal.find_event("0001")
    assert journal.find_event("00010").uuid.startswith("00010000")


def test_a_second_connection_can_label_while_the_writer_is_open(journal):
    journal.record(None, [event(record())])
    with Journal(journal.path) as other:
        other.set_label("11111111-2222-3333-4444-555555555555", "crack")
    assert journal.find_event("1").label == "crack"


def test_records_survive_a_writer_that_is_never_closed(tmp_path):
    """A crash leaves the WAL behind; the next open sees every committed row."""
    path = tmp_path / "crackd.db"
    j = Journal(path)
    j.record(None, [event(record())], [message()])
    # no close(): like SIGKILL
    with Journal(path) as again:
        assert again.outbox_depth() == 1 and len(again.list_events()) == 1
    j._conn.close()


# ----------------------------------------------------------------------- hostile references, empty files, failing disks


@pytest.mark.parametrize("ref", ["a%%%", "0___", "%%%%", "____", "a%", "11_1", "1111%"])
def test_like_wildcards_in_a_reference_match_nothing(journal, ref):
    journal.record(None, [event(record(uuid="a1111111-2222-3333-4444-555555555555"))])
    journal.record(None, [event(record(uuid="01111111-2222-3333-4444-555555555555"))])
    with pytest.raises(JournalError, match="not an event id or uuid"):
        journal.find_event(ref)


def test_a_short_reference_is_refused_before_anything_is_stripped(journal):
    journal.record(None, [event(record(uuid="a1111111-2222-3333-4444-555555555555"))])
    assert journal.find_event("a") is None and journal.find_event("a11") is None
    assert journal.find_event("A111").uuid.startswith("a111")  # uuids are hex: any letter case


def test_deleting_an_event_removes_its_undelivered_outbox_messages(journal):
    u, other = "c0000000-2222-3333-4444-555555555555", "d0000000-2222-3333-4444-555555555555"
    journal.record(None, [event(record(uuid=u))], [message(uuid=u, n=0)])
    journal.record(None, [event(record(END, uuid=u))], [message(uuid=u, n=1)])
    journal.record(None, [event(record(uuid=other))], [message(uuid=other)])
    journal.delete_event(u)
    rows = journal.outbox_fetch()
    assert [r.event_uuid for r in rows] == [other]


def test_a_zero_byte_journal_is_logged_and_moved_aside(tmp_path, caplog):
    path = tmp_path / "crackd.db"
    path.write_bytes(b"")
    with caplog.at_level("WARNING", logger="edge.events.journal"), Journal(path, on_corrupt="stop") as j:
        assert j.moved_aside is not None and j.moved_aside.exists() and j.moved_aside.stat().st_size == 0
        assert j.schema_version == SCHEMA_VERSION
    assert any("0 bytes" in r.getMessage() and str(j.moved_aside) in r.getMessage() for r in caplog.records)


def test_a_zero_byte_journal_with_its_wal_is_opened_not_moved(tmp_path):
    """A crash before the first checkpoint can leave an empty main file and the data in the WAL: keep it."""
    path = tmp_path / "crackd.db"
    j = Journal(path)
    j.record(None, [event(record())], [message()])
    j._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with Journal(path) as again:
        assert again.moved_aside is None and again.outbox_depth() == 1
    j._conn.close()


def test_a_read_only_journal_is_refused_at_open_with_one_line_naming_it(small_fs):
    path = small_fs / "crackd.db"
    with Journal(path) as j:
        j.record(None, [event(record())])
    remount(small_fs, "ro")
    with pytest.raises(JournalError) as err:
        Journal(path)
    message_ = str(err.value)
    assert str(path) in message_ and "not writable" in message_ and "\n" not in message_
    assert "integrity" not in message_ and ".recover" not in message_  # not mistaken for a damaged file


def test_a_full_disk_reports_the_real_error_not_the_failed_rollback(small_fs):
    path = small_fs / "crackd.db"
    (small_fs / "filler").write_bytes(b"\0" * (8 * 1024 * 1024 - 160 * 1024))  # room to create the journal, then little
    with Journal(path) as j:
        with pytest.raises(sqlite3.Error) as err:
            for n in range(2000):
                j.record(
                    FrameRow(t=float(n), seq=n, crack=False, score=0.1, segmented=False, ref="r" * 2000),
                    [event(record(uuid=f"{n:08d}-2222-3333-4444-555555555555"))],
                    [message(n=n)],
                )
        assert "no transaction is active" not in str(err.value)
        assert "full" in str(err.value).lower() or "disk" in str(err.value).lower()
        assert j.write_error == str(err.value)
        (small_fs / "filler").unlink()
        j.record(None, [event(record(uuid="ffffffff-2222-3333-4444-555555555555"))], [message()])
        assert j.write_error is None


def test_a_journal_file_of_mode_444_is_refused_for_the_daemon_user():
    """The daemon runs as its own user, for whom a mode-444 file is read-only (SQLite would open it read-only
    without a word). Root ignores file modes, so the check runs in a child that has become `nobody`."""
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="crackd-444-"))  # outside pytest's root-only (0700) temporary tree
    request_cleanup = lambda: shutil.rmtree(top, ignore_errors=True)  # noqa: E731
    state = top / "state"
    state.mkdir()
    with Journal(state / "crackd.db") as j:
        j.record(None, [event(record())])
    os.chmod(top, 0o755)
    for p in (state, *state.iterdir()):
        os.chown(p, 65534, 65534)
    os.chmod(state / "crackd.db", 0o444)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, open the journal, report what happened
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                Journal(state / "crackd.db").close()
                result = "opened"
            except JournalError as exc:
                result = str(exc)
        except BaseException as exc:
            result = f"child failed: {exc!r}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        result = f.read()
    request_cleanup()
    assert str(state / "crackd.db") in result and "not writable" in result and "ermission denied" in result, result


def test_held_writes_survive_the_reserve_file_without_their_pictures(tmp_path):
    """What a stop on a full disk saves (edge.daemon.held_writes):
    event writes and JSON messages, in place, and back."""
    from edge.daemon.held_writes import Reserve, encoded_size, without_pictures

    reserve = Reserve(tmp_path / "held-writes.reserve", size=64 * 1024)
    assert reserve.ensure() and reserve.load() == []
    picture = OutboxMessage("crackd/cam1/snapshot", b"\xff\xd8jpeg", 1, True, "u1")
    item = ([FrameRow(t=1.0, seq=1, crack=True, score=0.9, segmented=False)], [event(record())], [message(), picture])
    kept, shed = without_pictures(item)
    assert shed == 1 and kept[2] == [message()] and encoded_size(kept) > 0
    blocks = (tmp_path / "held-writes.reserve").stat().st_blocks
    assert reserve.save([kept, kept]) == 2
    assert (tmp_path / "held-writes.reserve").stat().st_blocks == blocks  # written over its own blocks
    loaded = reserve.load()
    assert loaded == [([], kept[1], kept[2])] * 2  # frame rows are not detections: not kept
    reserve.clear()
    assert reserve.load() == []
