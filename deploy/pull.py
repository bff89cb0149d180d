"""Bringing labelled events from devices to the bench: their frames and predicted masks, into a site dataset folder.

Each device is asked `crackd events pull-list --json` (edge/events/pull_answer.py) and then, for the events the site
does not have yet, `crackd events pack UUID...` (a tar of their pictures). Files land in the layout `crack-train
label` works on (trainer/labelling/site.py), named HOST-UUID so two devices never collide:

    SITE/images/HOST-UUID.jpg       the event's frame
    SITE/predicted/HOST-UUID.png    the device's predicted mask (0/255), when its segmenter ran on that frame
    SITE/masks/HOST-UUID.png        an all-zero mask for a "no-crack" verdict (a false alarm: a crack-free example)
    SITE/pulled.jsonl               one line per event pulled: host, uuid, verdict, times, files and their sha256

A device's answer is not trusted with paths: a uuid that is not a uuid is refused (nothing is taken from that device)
and the tar is read member by member, taking only the names the list announced, never extracted as it is. Every file
is written to a temporary name and renamed, and an event's manifest line is appended after its files, so an
interrupted pull leaves no half-written file and the next one fetches that event again, to the same names (a
manifest line cut short is dropped). An event whose verdict changed on the device since it was pulled is pulled
again: a no-crack verdict gains its all-zero mask, and one turned into a crack loses it (only when it is still the
file this tool wrote: a person's mask is never touched).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from deploy.push import DeviceSettings, Progress, read_answer
from deploy.ssh import Remote, RemoteError, SSHUnreachable
from edge.atomic_write import write_bytes_atomic
from edge.events.pull_answer import PULLED_MANIFEST, EventsForPull, PullableEvent, read_pulled
from edge.timestamps import iso_utc

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PICTURE_SUFFIXES = (".jpg", ".png")  # what a frame picture may be; the mask is always a PNG
PACK_BATCH = 50  # events per `crackd events pack` call: a bounded tar in the device's memory

PULLED, UP_TO_DATE, UNREACHABLE, FAILED = "pulled", "up to date", "unreachable", "failed"


class HostileAnswer(RemoteError):
    """A device's answer names a file outside what it may name (a uuid with ../, an absolute path, ...)."""


@dataclass
class PullResult:
    host: str
    outcome: str = FAILED
    new: int = 0  # events added to the site (or whose new verdict was applied) by this pull
    relabelled: int = 0  # of them, events already in the site whose verdict changed on the device
    known: int = 0  # labelled events the site already had
    skipped: list[str] = field(default_factory=list)  # events whose frame is no longer on the device
    seconds: float = 0.0
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in (PULLED, UP_TO_DATE)

    def as_dict(self) -> dict:
        return {
            "host": self.host,
            "ok": self.ok,
            "outcome": self.outcome,
            "new": self.new,
            "relabelled": self.relabelled,
            "known": self.known,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 1),
            "message": self.message,
        }


def host_slug(host: str) -> str:
    """The host as a file-name part: `ssh://pi@cam-01:2222` -> `pi_cam-01_2222`, `cam-01` stays."""
    name = host.removeprefix("ssh://")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "host"


def stem_of(host: str, uuid: str) -> str:
    return f"{host_slug(host)}-{uuid}"


class SiteManifest:
    """SITE/pulled.jsonl: what came from where, the last line of an event winning (a later verdict appends one).
    Appends are serialised (several devices pull at once)."""

    def __init__(self, site: Path):
        self.path = site / PULLED_MANIFEST
        self._lock = threading.Lock()
        # _whole: bytes up to the last newline, when an append was cut short after it
        self._entries, self._whole = read_pulled(self.path)

    def entry(self, host: str, uuid: str) -> dict | None:
        return self._entries.get((host, uuid))

    def add(self, entry: dict) -> None:
        line = json.dumps(entry) + "\n"
        with self._lock:
            if self._whole is not None:  # drop the cut line (its event is being fetched again)
                with open(self.path, "r+b") as cut:
                    cut.truncate(self._whole)
                self._whole = None
            with open(self.path, "a") as out:
                out.write(line)
            self._entries[(entry["host"], entry["uuid"])] = entry


def _checked(answer: EventsForPull, host: str) -> list[PullableEvent]:
    """The device's events, after refusing any name that could point outside what it may send."""
    for event in answer.events:
        if not UUID.fullmatch(event.uuid):
            raise HostileAnswer(host, f"answered an event uuid {event.uuid!r}, not a uuid; nothing taken from it")
        for rel in (event.frame, event.mask):
            if rel is not None and (rel.startswith("/") or ".." in Path(rel).parts or "\\" in rel):
                raise HostileAnswer(
                    host, f"answered a picture path {rel!r} for event {event.uuid} outside its state directory"
                )
        if event.frame is not None and not event.frame.lower().endswith(PICTURE_SUFFIXES):
            raise HostileAnswer(host, f"answered a frame {event.frame!r} that is not a .jpg or .png picture")
    return list(answer.events)


def _members(data: bytes, wanted: set[str], host: str) -> dict[str, bytes]:
    """The regular files of the tar whose names were announced; anything else in it is ignored."""
    found = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        found[member.name] = handle.read()
    except tarfile.TarError as exc:
        raise RemoteError(host, f"`crackd events pack` sent no readable tar ({exc})") from None
    return found


def _decoded(data: bytes, what: str, host: str) -> np.ndarray:
    picture = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if picture is None:
        raise RemoteError(host, f"{what}: not a picture that decodes")
    return picture


def _store(site: Path, host: str, event: PullableEvent, files: dict[str, bytes], manifest: SiteManifest) -> bool:
    """Write one event's files into the site and then its manifest line; False when its frame did not come."""
    frame = files.get(event.frame or "")
    if frame is None:
        return False
    stem = stem_of(host, event.uuid)
    picture = _decoded(frame, f"frame of event {event.uuid}", host)
    suffix = Path(event.frame or "").suffix.lower()
    written = {f"images/{stem}{suffix}": frame}
    mask = files.get(event.mask or "")
    if mask is not None:
        _decoded(mask, f"mask of event {event.uuid}", host)
        written[f"predicted/{stem}.png"] = mask
    label_path = f"masks/{stem}.png"
    earlier = manifest.entry(host, event.uuid)
    if event.label != "no-crack" and earlier and (site / label_path).is_file():
        # Once a false alarm, now a crack: the all-zero mask this pull wrote is wrong; a person's mask stays.
        written_then = earlier.get("files", {}).get(label_path)
        if written_then == hashlib.sha256((site / label_path).read_bytes()).hexdigest():
            (site / label_path).unlink()
    if event.label == "no-crack" and not (site / label_path).exists():  # a person's mask is never replaced
        ok, empty = cv2.imencode(".png", np.zeros(picture.shape[:2], np.uint8))
        if ok:
            written[label_path] = empty.tobytes()
    for rel, data in written.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(site / rel, data)
    manifest.add(
        {
            "host": host,
            "uuid": event.uuid,
            "stem": stem,
            "device_id": event.device_id,
            "label": event.label,
            "kind": event.kind,  # an event, or a frame the device kept to be labelled (missed: a crack it missed)
            "label_note": event.label_note,
            "labelled_at": event.labelled_at,
            "started_at": event.started_at,
            "ended_at": event.ended_at,
            "peak_score": event.peak_score,
            "bundle_version": event.bundle_version,
            "pulled_at": iso_utc(time.time(), "seconds"),
            "files": {rel: hashlib.sha256(data).hexdigest() for rel, data in written.items()},
        }
    )
    return True


def pull_host(
    host: str, site: Path, dev: DeviceSettings, remote: Remote, manifest: SiteManifest, progress: Progress
) -> PullResult:
    """Pull one device's new labelled events; never raises for device-side problems (they become the result)."""
    t0 = time.monotonic()
    result = PullResult(host)
    try:
        answer = read_answer(
            EventsForPull, remote.run_json(dev.events("pull-list"), 120), host, "crackd events pull-list"
        )
        events = _checked(answer, host)
        # New events, and events whose verdict changed on the device since they were pulled.
        new = [e for e in events if (manifest.entry(host, e.uuid) or {}).get("label") != e.label]
        result.relabelled = sum(manifest.entry(host, e.uuid) is not None for e in new)
        result.known = len(events) - len(new)
        no_frame = [e for e in new if e.frame is None]
        result.skipped += [e.uuid for e in no_frame]
        todo = [e for e in new if e.frame is not None]
        progress(host, f"{len(events)} labelled event(s), {len(todo)} new to fetch")
        for start in range(0, len(todo), PACK_BATCH):
            batch = todo[start : start + PACK_BATCH]
            data = remote.read_bytes(dev.events("pack", *[e.uuid for e in batch], json=False), 600)
            files = _members(data, {rel for e in batch for rel in (e.frame, e.mask) if rel}, host)
            for event in batch:
                if _store(site, host, event, files, manifest):
                    result.new += 1
                else:
                    result.skipped.append(event.uuid)
        result.outcome = PULLED if result.new else UP_TO_DATE
        relabelled = f" ({result.relabelled} with a changed verdict)" if result.relabelled else ""
        result.message = f"{result.new} new{relabelled}, {result.known} already in the site" + (
            f", {len(result.skipped)} without a frame on the device (snapshot budget)" if result.skipped else ""
        )
    except SSHUnreachable as exc:
        result.outcome, result.message = UNREACHABLE, str(exc)
    except RemoteError as exc:
        result.outcome, result.message = FAILED, str(exc)
    finally:
        remote.close_shared_connection()
        result.seconds = time.monotonic() - t0
    return result


def pull(
    hosts: list[str],
    site: Path,
    dev: DeviceSettings,
    make_remote: Callable[[str], Remote],
    progress: Progress,
    parallel: int = 4,
) -> list[PullResult]:
    """Pull every host into `site` (created); one host's failure does not stop the others."""
    site.mkdir(parents=True, exist_ok=True)
    manifest = SiteManifest(site)
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts)))) as pool:
        return list(pool.map(lambda h: pull_host(h, site, dev, make_remote(h), manifest, progress), hosts))
