"""Fault injection: the daemon (a real process) SIGKILLed at random moments while the broker goes down and comes
back; then one more run until its outbox is empty. Every event the journal holds must have reached the subscriber
at least once, and the journal must pass a full `PRAGMA integrity_check`.

Three variants: the MQTT JSON format; the same with some of the starts on a full disk (a real 8 MB tmpfs, root
only); and Sparkplug B, where every session's `seq` must count from its NBIRTH's 0 without a gap or a stranger, and
`bdSeq` must pair each NDEATH with its session.
"""

from __future__ import annotations

import itertools
import random
import re
import sqlite3
import time
from pathlib import Path

from edge.events.journal import Journal, integrity_check
from tests.helpers import read_status, wait_until, write_frames
from tests.helpers.daemon import BLOCK, daemon_dict, start_daemon, stop_process
from tests.helpers.disk import fill_disk


def _processing(state: Path, proc) -> bool:
    status = read_status(state)
    return status.pid == proc.pid and status.frames_processed > 0


def _kill_loop(
    config: dict,
    tmp_path: Path,
    mosquitto,
    rng: random.Random,
    kills: int,
    seconds: float,
    on_run=None,
    clean_stops: frozenset[int] = frozenset(),
) -> list[str]:
    """Start, let it work a random moment, SIGKILL (SIGTERM for the runs in `clean_stops`); the broker goes down or
    comes back now and then. Returns each run's log.

    `on_run(n)` before the n-th start may change the world (fill the disk) and returns how to wait for the run:
    None waits until status.json shows it processing frames; a number of seconds just lets it run (a daemon on a
    full disk can write no status.json and takes no frame); a regular expression waits for its log to match."""
    state = Path(config["storage"]["state_dir"])
    daemon_log = tmp_path / "daemon.log"
    logs: list[str] = []
    broker_up, budget_end = True, time.monotonic() + seconds
    while len(logs) < kills and time.monotonic() < budget_end:
        n = len(logs)
        wait_for = on_run(n) if on_run else None
        before = daemon_log.stat().st_size if daemon_log.exists() else 0
        proc = start_daemon(config, tmp_path)
        try:
            if wait_for is None:
                wait_until(
                    lambda proc=proc: _processing(state, proc),
                    timeout=30,
                    what=f"daemon run {n + 1} processing frames",
                    interval=0.02,
                )
                time.sleep(rng.uniform(0.0, 0.6))
            elif isinstance(wait_for, str):
                wait_until(
                    lambda pattern=wait_for, start=before: re.search(pattern, daemon_log.read_text()[start:]),
                    timeout=90,
                    what=f"run {n + 1} logging {wait_for!r}",
                )
            else:
                time.sleep(wait_for)
            assert proc.poll() is None, f"run {n + 1} ended by itself: {daemon_log.read_text()[before:]}"
        finally:
            if n in clean_stops:
                assert stop_process(proc) == 0
            else:
                proc.kill()
                proc.wait(10)
        logs.append(daemon_log.read_text()[before:])
        if rng.random() < 0.4:  # the broker goes down or comes back (a clean stop keeps its persistent sessions)
            if broker_up:
                mosquitto.stop()
            else:
                mosquitto.start()
            broker_up = not broker_up
    if not broker_up:
        mosquitto.start()
    return logs


def _final_run_drains(config: dict, tmp_path: Path) -> set[str]:
    """One more run until the outbox is empty (then a clean stop); returns the uuids the journal holds."""
    state = Path(config["storage"]["state_dir"])
    assert integrity_check(state / "crackd.db") is None
    final = start_daemon(config, tmp_path)
    try:
        wait_until(lambda: _processing(state, final), timeout=30, what="the last run processing frames")
        with Journal(state / "crackd.db") as j:
            wait_until(lambda: j.outbox_depth() == 0, timeout=60, what="the outbox drained")
            recorded = {e.uuid for e in j.list_events()}
    finally:
        assert stop_process(final) == 0
    conn = sqlite3.connect(state / "crackd.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    return recorded


def _config(tmp_path: Path, darkness_bundle: Path, port: int, **over) -> dict:
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 4)
    return daemon_dict(
        tmp_path, darkness_bundle, frames, port, source__folder__fps=80, source__folder__loop=True, **over
    )


def test_fault_injection_broker_bouncing_and_sigkills_lose_no_journalled_event(
    tmp_path, darkness_bundle, mosquitto, subscriber_factory
):
    config = _config(tmp_path, darkness_bundle, mosquitto.port)
    sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/event")
    kills = len(_kill_loop(config, tmp_path, mosquitto, random.Random(11), kills=20, seconds=40))
    assert kills >= 5
    recorded = _final_run_drains(config, tmp_path)
    sub.wait_for(lambda s: {p["uuid"] for p in s.on("event")} >= recorded, timeout=30, what="every journalled event")
    assert recorded and len(recorded) >= kills


def test_fault_injection_with_starts_on_a_full_disk_loses_no_journalled_event(
    tmp_path, darkness_bundle, mosquitto, subscriber_factory, small_fs
):
    """The middle runs start on a disk filled to the last byte after a clean stop (so SQLite must make its -shm
    file again to open the journal) and crash on it (SIGKILL), as systemd restarts them; the last of them is
    stopped with SIGTERM once its journal fails. Each start comes up (no crash loop), the clean stop on the full
    disk loses no event it detected, and once space returns every journalled event is delivered."""
    config = _config(tmp_path, darkness_bundle, mosquitto.port, storage__state_dir=str(small_fs / "state"))
    sub = subscriber_factory(mosquitto.port, topic="crackd/cam1/event")
    filler: list[Path] = []
    journal_fails = r"held in memory|not keeping detections"

    def on_run(n: int) -> float | str | None:
        if n == 3:
            filler.append(fill_disk(small_fs))
        if n == 7:
            filler.pop().unlink()
        return journal_fails if n == 6 else 1.0 if 3 <= n < 7 else None

    logs = _kill_loop(
        config,
        tmp_path,
        mosquitto,
        random.Random(5),
        kills=9,
        seconds=120,
        on_run=on_run,
        clean_stops=frozenset({2, 6}),
    )
    assert len(logs) == 9
    detected_on_full_disk = set(re.findall(r"crack event ([0-9a-f-]{36}) started", logs[6]))
    everything = "".join(logs)
    assert "LOST" not in everything and "NOT recorded" not in everything and "Traceback" not in everything
    recorded = _final_run_drains(config, tmp_path)
    assert detected_on_full_disk <= recorded
    sub.wait_for(lambda s: {p["uuid"] for p in s.on("event")} >= recorded, timeout=30, what="every journalled event")


def _sparkplug_sessions(messages) -> tuple[list[tuple[int, list[int]]], list[int]]:
    """Sessions in arrival order as (NBIRTH bdSeq, seqs from the NBIRTH on), and the NDEATHs' bdSeqs."""
    from edge.outputs.sparkplug_b_pb2 import Payload

    sessions: list[tuple[int, list[int]]] = []
    deaths: list[tuple[int, int]] = []  # (bdSeq, sessions seen before it)
    for topic, raw, _ in messages:
        kind = topic.split("/")[2]
        p = Payload.FromString(raw)
        metrics = {m.name: m.long_value for m in p.metrics if m.name == "bdSeq"}
        if kind == "NDEATH":
            assert not p.HasField("seq"), "an NDEATH carries no seq"
            deaths.append((metrics["bdSeq"], len(sessions)))
        elif kind == "NBIRTH":
            sessions.append((metrics["bdSeq"], [p.seq]))
        else:
            assert sessions, f"{kind} before any NBIRTH"
            sessions[-1][1].append(p.seq)
    births = [b for b, _ in sessions]
    for bdseq, seen in deaths:  # its session's NBIRTH is the last one before it, or never arrived (killed first)
        assert (seen and births[seen - 1] == bdseq) or bdseq not in births[:seen], (bdseq, births[:seen])
    return sessions, [b for b, _ in deaths]


def test_fault_injection_in_sparkplug_mode_every_event_arrives_and_seq_and_bdseq_stay_valid(
    tmp_path, darkness_bundle, mosquitto, subscriber_factory
):
    from edge.outputs.sparkplug_b_pb2 import Payload

    # The broker keeps its defaults (max_inflight_messages 20 towards the subscriber, QoS 0 messages not queued for
    # an offline session): the replay after each reconnect fills the subscriber's in-flight window, and a message
    # that could overtake the queued ones there (or be dropped while the subscriber reconnects) breaks seq.
    config = _config(tmp_path, darkness_bundle, mosquitto.port, mqtt__format="sparkplug_b", mqtt__snapshots=False)
    sub = subscriber_factory(mosquitto.port, topic="spBv1.0/#")
    kills = len(_kill_loop(config, tmp_path, mosquitto, random.Random(7), kills=10, seconds=30))
    assert kills >= 5
    recorded = _final_run_drains(config, tmp_path)

    def delivered(s) -> set[str]:
        uuids = set()
        for topic, raw, _ in list(s.messages):
            if topic.split("/")[2] == "DDATA":
                uuids |= {m.string_value for m in Payload.FromString(raw).metrics if m.name == "Crack/Event UUID"}
        return uuids

    sub.wait_for(lambda s: delivered(s) >= recorded, timeout=30, what="every journalled event as DDATA")
    sub.wait_for(lambda s: s.messages[-1][0].split("/")[2] == "NDEATH", what="the last run's NDEATH")
    sessions, _deaths = _sparkplug_sessions(list(sub.messages))
    births = [b for b, _ in sessions]
    # (a run with the broker away has no session; one killed before its births may leave only an NDEATH)
    assert len(sessions) >= 2 and births == sorted(set(births))  # a new bdSeq for every session, never reused
    for bdseq, seqs in sessions:  # NBIRTH 0, DBIRTH 1, then one more per message, wrapping after 255
        consecutive = all(b == (a + 1) % 256 for a, b in itertools.pairwise(seqs))
        assert seqs[:2] in ([0], [0, 1]) and consecutive, f"bdSeq {bdseq}: seq {seqs}"
