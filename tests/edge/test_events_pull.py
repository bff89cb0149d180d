"""What a device offers `crack-deploy pull` (`crackd events pull-list --json`, `crackd events pack`): the labelled
events of a real daemon run with their frame and the predicted mask kept beside it, as a typed contract that matches
docs/schemas/events/pull.schema.json."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile

import cv2
import jsonschema
import numpy as np
import pytest

from edge.cli import main
from edge.config import config_from_dict
from edge.events.journal import Journal
from edge.events.pull_answer import EventsForPull, PullableEvent
from edge.layout import StateLayout
from edge.vocabulary import LABELS
from tests.helpers import SCHEMAS, write_frames
from tests.helpers.daemon import BLOCK, InProcess, daemon_dict

SCHEMA = json.loads((SCHEMAS / "events" / "pull.schema.json").read_text())


@pytest.fixture
def device(tmp_path, darkness_bundle):
    """A state directory after a real daemon run: two events with their pictures, the first two labelled."""
    frames = tmp_path / "frames"
    write_frames(frames, BLOCK * 3)
    InProcess(config_from_dict(daemon_dict(tmp_path, darkness_bundle, frames, None))).wait_finished()
    state = tmp_path / "state"
    with Journal(StateLayout(state).default_db) as journal:
        events = journal.list_events(newest_first=False)
        journal.set_label(events[0].uuid, "crack")
        journal.set_label(events[1].uuid, "no-crack", "a joint")
    return state, [e.uuid for e in events]


def pull_list(state, capsysbinary) -> dict:
    capsysbinary.readouterr()
    assert main(["events", "pull-list", "--state-dir", str(state), "--json"]) == 0
    return json.loads(capsysbinary.readouterr().out)


def test_the_schema_and_the_dataclasses_name_the_same_fields_in_the_same_order():
    for definition, cls in (("events_for_pull", EventsForPull), ("pullable_event", PullableEvent)):
        declared = SCHEMA["$defs"][definition]
        assert list(declared["properties"]) == [f.name for f in dataclasses.fields(cls)]
        without_default = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        assert without_default <= set(declared["required"])
    assert tuple(SCHEMA["$defs"]["pullable_event"]["properties"]["label"]["enum"]) == LABELS


def test_pull_list_offers_the_labelled_events_with_their_frame_and_predicted_mask(device, capsysbinary):
    state, uuids = device
    answer = pull_list(state, capsysbinary)
    jsonschema.validate(answer, SCHEMA)
    read = EventsForPull.from_json(answer)
    assert read.device_id == "cam1"
    assert [(e.uuid, e.label, e.label_note) for e in read.events] == [
        (uuids[0], "crack", None),
        (uuids[1], "no-crack", "a joint"),
    ]  # the third, unlabelled, is not offered
    for event in read.events:
        assert event.frame and event.mask == event.frame.removesuffix(".jpg") + ".mask.png"
        frame = cv2.imread(str(state / event.frame))
        mask = cv2.imread(str(state / event.mask), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and mask.shape == frame.shape[:2]
        assert set(np.unique(mask)) <= {0, 255} and mask.any()  # the darkness bundle segments the dark crack


def test_pack_sends_the_pictures_of_the_events_named_as_a_tar(device, capsysbinary):
    state, uuids = device
    read = EventsForPull.from_json(pull_list(state, capsysbinary))
    gone = "0f0e0d0c-0b0a-4908-8706-050403020100"  # deleted since it was listed: left out, not an error
    assert main(["events", "pack", "--state-dir", str(state), uuids[1], gone]) == 0
    with tarfile.open(fileobj=io.BytesIO(capsysbinary.readouterr().out)) as tar:
        names = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    second = read.events[1]
    assert set(names) == {second.frame, second.mask}
    assert names[second.frame] == (state / second.frame).read_bytes()


def test_deleting_an_event_deletes_its_predicted_mask_too(device, capsysbinary):
    state, uuids = device
    first = EventsForPull.from_json(pull_list(state, capsysbinary)).events[0]
    assert first.mask and (state / first.mask).is_file()
    assert main(["events", "delete", "--state-dir", str(state), uuids[0]]) == 0
    assert not (state / first.mask).exists() and not (state / str(first.frame)).exists()
