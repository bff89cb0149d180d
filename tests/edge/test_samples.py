"""Frames worth labelling kept on the device (edge.daemon.samples): lossless event frames, sampled crack-free frames
within the snapshot budget, and `crackd events flag-missed` storing the daemon's last seconds of frames for
`crack-deploy pull` as a missed crack. A real daemon on the darkness bundle, folder frames, a real journal."""

from __future__ import annotations

import json

import cv2
import jsonschema
import numpy as np

from edge.cli import main
from edge.config import config_from_dict
from edge.events.journal import Journal
from edge.events.pull_answer import EventsForPull
from edge.layout import StateLayout
from edge.vocabulary import RECORD_KINDS
from tests.helpers import SCHEMAS, write_frames
from tests.helpers.daemon import BLOCK, InProcess, daemon_dict, flag_missed_after_a_run
from tests.helpers.waiting import wait_until

SCHEMA = json.loads((SCHEMAS / "events" / "pull.schema.json").read_text())


def run_once(tmp_path, bundle, pattern: str, **over) -> Journal:
    frames = tmp_path / "frames"
    write_frames(frames, pattern)
    InProcess(config_from_dict(daemon_dict(tmp_path, bundle, frames, None, **over))).wait_finished()
    return Journal(StateLayout(tmp_path / "state").default_db)


def test_an_event_frame_in_png_is_exactly_a_frame_the_model_saw(tmp_path, darkness_bundle):
    with run_once(tmp_path, darkness_bundle, BLOCK, storage__frame_format="png") as journal:
        (event,) = journal.list_events()
        seen = {f.ref for f in journal.event_frames(event.uuid)}
    assert event.snapshot and event.snapshot.endswith(".png")
    picture = cv2.imread(str(tmp_path / "state" / event.snapshot))
    assert any(np.array_equal(picture, cv2.imread(str(tmp_path / "frames" / str(ref)))) for ref in seen)
    mask = cv2.imread(str(tmp_path / "state" / StateLayout.snapshot_mask(event.snapshot)), cv2.IMREAD_UNCHANGED)
    assert mask.shape == picture.shape[:2]  # the predicted mask lies on the picture pixel for pixel


def test_crack_free_frames_are_kept_at_the_configured_rate(tmp_path, darkness_bundle):
    # One an hour: a run of seconds keeps exactly the first crack-free frame.
    with run_once(tmp_path, darkness_bundle, "...." + BLOCK, storage__sample_crack_free_every_s=3600) as journal:
        (sample,) = journal.list_events(kind="crack-free")
        assert len(journal.list_events(kind="event")) == 1
    assert sample.state == "ended" and sample.label is None and sample.first_frame_seq == 1
    assert sample.snapshot and (tmp_path / "state" / sample.snapshot).is_file()


def test_crack_free_frames_share_the_snapshot_budget_oldest_going_first(tmp_path, darkness_bundle):
    # Every frame with no crack and no event is kept; the budget (a few small PNGs) deletes the oldest, picture and row.
    budget_mb = 2000 / 1024 / 1024
    with run_once(
        tmp_path,
        darkness_bundle,
        "." * 12,
        storage__sample_crack_free_every_s=1e-9,
        storage__frame_format="png",
        storage__snapshot_budget_mb=budget_mb,
    ) as journal:
        samples = journal.list_events(kind="crack-free", newest_first=False)
    kept = [int(s.first_frame_seq) for s in samples]
    assert 0 < len(kept) < 12 and kept == list(range(13 - len(kept), 13))  # the newest kept; the others' rows gone
    assert all(s.snapshot and (tmp_path / "state" / s.snapshot).is_file() for s in samples)
    used = sum(p.stat().st_size for p in (tmp_path / "state" / "snapshots").rglob("*") if p.is_file())
    assert used <= budget_mb * 1024 * 1024


def test_flag_missed_keeps_the_held_frames_and_pull_brings_them_as_cracks(tmp_path, darkness_bundle, capsys):
    answer = flag_missed_after_a_run(tmp_path, darkness_bundle, held=3, note="belt 2")
    state = tmp_path / "state"
    assert answer["held_bytes"] == 3 * 48 * 64 * 3  # bounded: never more than its 3 frames, however many went by
    assert answer["held"] == 3 and len(answer["stored"]) == 3
    assert main(["events", "pull-list", "--state-dir", str(state), "--json"]) == 0
    offered = json.loads(capsys.readouterr().out)
    jsonschema.validate(offered, SCHEMA)
    missed = [e for e in EventsForPull.from_json(offered).events if e.kind == "missed"]
    assert sorted(e.uuid for e in missed) == sorted(answer["stored"])
    for e in missed:
        assert (e.label, e.label_note, e.mask) == ("crack", "belt 2", None)
        assert e.frame and cv2.imread(str(state / e.frame)).shape == (48, 64, 3)


def test_flag_missed_without_a_daemon_says_so(tmp_path, capsys):
    state = tmp_path / "state"
    state.mkdir()
    Journal(StateLayout(state).default_db).close()
    assert main(["events", "flag-missed", "--state-dir", str(state)]) == 2
    assert "no daemon runs" in capsys.readouterr().err


def test_frames_near_the_gate_are_kept_as_uncertain_beside_the_event(tmp_path, darkness_bundle):
    # A band of the whole score range: every frame is "near the gate", and the event is still decided as before.
    with run_once(
        tmp_path, darkness_bundle, BLOCK, storage__sample_uncertain_band=1.0, storage__sample_uncertain_every_s=1e-9
    ) as journal:
        uncertain = journal.list_events(kind="uncertain", newest_first=False)
        (event,) = journal.list_events(kind="event")
    assert [s.first_frame_seq for s in uncertain] == list(range(1, len(BLOCK) + 1))
    assert event.frames == 3 and all(s.label is None and s.snapshot for s in uncertain)


def test_the_pull_schema_lists_the_kinds_of_the_vocabulary():
    assert tuple(SCHEMA["$defs"]["pullable_event"]["properties"]["kind"]["enum"]) == RECORD_KINDS


def test_flag_missed_with_the_buffer_off_says_why_nothing_was_kept(tmp_path, darkness_bundle, capsys):
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK)
    over = dict(source__folder__loop=True, source__folder__fps=50, storage__missed_buffer_s=0)
    daemon = InProcess(config_from_dict(daemon_dict(tmp_path, darkness_bundle, frames, None, **over)))
    try:
        wait_until(lambda: daemon.sup.parts.pipeline.frames_processed > 3, what="frames go by")
        assert main(["events", "flag-missed", "--state-dir", str(tmp_path / "state")]) == 1
    finally:
        daemon.stop()
    assert "missed_buffer_s is 0" in capsys.readouterr().err
    assert not daemon.sup.parts.pipeline.samples.missed.frames
