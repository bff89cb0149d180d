"""Every path crackd reads or writes outside a bundle: one
definition, used by the daemon, the CLI and the release manager.

Config directory (an installed device, deploy/install.sh): /etc/crackd/crackd.yaml and /etc/crackd/allowed_signers.

State directory (`storage.state_dir`, /var/lib/crackd on a device, ./crackd-state for the demo):

    crackd.db                       the journal (unless storage.db names another file)
    crackd.pid                      locked by the running daemon; its pid is only informative
    status.json                     rewritten about every second (edge.daemon_status;
                                    schema: docs/schemas/state/status.schema.json)
    held-writes.reserve             space kept for journal writes held while the disk is full
    journal-open.reserve            space kept for opening the journal on a full disk (SQLite's -shm and -wal)
    sparkplug_bdseq                 the Sparkplug B birth/death sequence across restarts
    snapshots/<YYYYMMDD>/<uuid>.jpg       the event's frame (<uuid>.png with storage.frame_format: png), and
                                    <uuid>.overlay.jpg, and <uuid>.mask.png: the predicted mask, 0/255, when the
                                    segmenter ran; `crack-deploy pull` fetches it. Frames kept to be labelled
                                    (edge.daemon.samples) lie there too, without an overlay.
    flag-missed.request.json        only while `crackd events flag-missed` waits for the daemon
    flag-missed.answer.json         the daemon's answer to it
    models/releases/<version>/      installed bundles, each verified when staged
    models/current, models/previous symlinks into releases/, switched atomically
    models/deployments.jsonl        who deployed, activated or rolled back what, when
    models/switch.json              only while activate/rollback switches the links (undone if left behind)
    models/.lock, .lock.holder      the device lock of `crackd models` and `crack-deploy`

Which state directory a command uses when none is given: edge.state_location.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.shipped import SHIPPED_BUNDLE

CONFIG_DIR = Path("/etc/crackd")
DEFAULT_CONFIG = CONFIG_DIR / "crackd.yaml"
DEFAULT_ALLOWED_SIGNERS = CONFIG_DIR / "allowed_signers"
INSTALLED_STATE_DIR = Path("/var/lib/crackd")
DEMO_STATE_DIR = "./crackd-state"

__all__ = ["SHIPPED_BUNDLE", "StateLayout"]


@dataclass(frozen=True)
class StateLayout:
    """The paths of one state directory (see the module docstring)."""

    state_dir: Path

    @property
    def default_db(self) -> Path:
        return self.state_dir / "crackd.db"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "crackd.pid"

    @property
    def status_file(self) -> Path:
        return self.state_dir / "status.json"

    @property
    def held_writes_reserve(self) -> Path:
        return self.state_dir / "held-writes.reserve"

    @property
    def journal_open_reserve(self) -> Path:
        return self.state_dir / "journal-open.reserve"

    @property
    def sparkplug_bdseq(self) -> Path:
        return self.state_dir / "sparkplug_bdseq"

    @property
    def snapshots(self) -> Path:
        return self.state_dir / "snapshots"

    def snapshot_pictures(self, day: str, uuid: str, frame_suffix: str = ".jpg") -> tuple[str, str]:
        """The frame and overlay pictures of one event, relative to the state directory (as the journal stores them).

        `frame_suffix`: .jpg, or .png for a lossless frame (storage.frame_format); the overlay is always a JPEG."""
        return f"snapshots/{day}/{uuid}{frame_suffix}", f"snapshots/{day}/{uuid}.overlay.jpg"

    @property
    def flag_missed_request(self) -> Path:
        """Written by `crackd events flag-missed`, taken by the running daemon (edge.daemon.samples)."""
        return self.state_dir / "flag-missed.request.json"

    @property
    def flag_missed_answer(self) -> Path:
        """The daemon's answer to that request: what it stored."""
        return self.state_dir / "flag-missed.answer.json"

    @staticmethod
    def snapshot_mask(frame: str) -> str:
        """The predicted mask kept beside an event's frame picture (`snapshots/D/U.jpg` -> `snapshots/D/U.mask.png`).

        Named after the frame rather than recorded in the journal: it is written, fetched and deleted with it."""
        return frame.rsplit(".", 1)[0] + ".mask.png"

    @property
    def models(self) -> Path:
        return self.state_dir / "models"

    @property
    def releases(self) -> Path:
        return self.models / "releases"

    @property
    def current(self) -> Path:
        return self.models / "current"

    @property
    def previous(self) -> Path:
        return self.models / "previous"

    @property
    def history(self) -> Path:
        return self.models / "deployments.jsonl"

    @property
    def switch_intent(self) -> Path:
        return self.models / "switch.json"

    @property
    def lock(self) -> Path:
        return self.models / ".lock"

    @property
    def lock_holder(self) -> Path:
        return self.models / ".lock.holder"

    def release(self, version: str) -> Path:
        return self.releases / version
