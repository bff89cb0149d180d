"""The answers of `crackd models ... --json`: the protocol between a device and crack-deploy, as typed contracts.

One writer: edge.cli.models prints `{"ok": true, **answer.to_json()}`, or `{"ok": false, **Refusal.to_json()}`.
Readers go through `X.from_json(payload)` (deploy.push, deploy.cli), so a key read under a wrong name fails a test
instead of reading None, and a device whose answer does not fit says so in one line. An answer from an older
crackd lacks newer keys, which read as their defaults; keys a newer one added are ignored.
Schema: docs/schemas/models/answers.schema.json (one definition per class, same field names in the same order).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from edge.daemon_status import StatusReading
from edge.json_contract import JsonContract, to_json
from edge.releases.signing import SignatureInfo


def _fields_after(cls: type, name: str) -> tuple[str, ...]:
    names = [f.name for f in fields(cls)]
    return tuple(names[names.index(name) + 1 :])


@dataclass(frozen=True)
class Latency(JsonContract):
    """Per-frame time of the bundle's two models on the device (medians of `runs`, ms)."""

    classifier_ms_p50: float | None = None
    segmenter_ms_p50: float | None = None
    total_ms_p50: float | None = None
    total_ms_max: float | None = None
    runs: int | None = None


@dataclass(frozen=True)
class StageReport(JsonContract):
    """`crackd models stage --json`: the release installed and what its check measured."""

    version: str
    path: str
    sha256: str  # of manifest.json
    signer: SignatureInfo | None
    golden: dict  # the golden self-test report (edge.engine.selftest.GoldenReport.as_dict); {} when already staged
    latency_ms: Latency | None  # None when already staged (nothing measured)
    already_staged: bool = False
    runtime: str = ""
    trust: str = ""  # why it may be served: "signer NAME", "shipped with this crackd", "unsigned (...)"


@dataclass(frozen=True)
class DaemonSignal(JsonContract):
    """What became of the SIGHUP a switch sends the daemon."""

    pid: int | None = None
    signalled: bool = False
    message: str = ""


@dataclass(frozen=True)
class Health(JsonContract):
    """Whether the daemon served a release healthily in time, and what was measured."""

    ok: bool
    message: str


@dataclass(frozen=True)
class SwitchResult(JsonContract):
    """`crackd models activate|rollback --json` (and the `switch` of a NotHealthy refusal)."""

    action: str  # activate | rollback
    version: str
    from_version: str | None
    at: str = ""  # device clock, ISO 8601 UTC: a daemon reload after this belongs to this switch
    daemon: DaemonSignal = field(default_factory=DaemonSignal)
    removed: list[str] = field(default_factory=list)  # releases pruned
    health: Health | None = None  # when asked to wait until the daemon serves the release


@dataclass(frozen=True)
class InstalledRelease(JsonContract):
    """One entry of `crackd models list --json`."""

    version: str
    current: bool
    previous: bool
    installed_at: str
    created: str | None = None
    sha256: str | None = None
    signed: bool | None = None
    error: str | None = None  # the release no longer reads as a bundle

    def to_json(self) -> dict:  # as `list` always wrote it: what could not be read is left out
        return to_json(self, omit_none=_fields_after(InstalledRelease, "installed_at"))


@dataclass(frozen=True)
class DeploymentRecord(JsonContract):
    """One line of STATE/models/deployments.jsonl; keys after `outcome` are written only when set."""

    time: str
    action: str  # stage | activate | rollback | confirm | health
    version: str | None
    who: str
    outcome: str  # staged, already staged, rejected, activated, rolled back, interrupted, healthy, unhealthy
    from_version: str | None = None
    reason: str | None = None
    message: str | None = None
    error: str | None = None
    source: str | None = None
    sha256: str | None = None
    signer: str | None = None
    latency_ms: float | None = None
    daemon: str | None = None

    def to_json(self) -> dict:
        return to_json(self, omit_none=_fields_after(DeploymentRecord, "outcome"))


@dataclass(frozen=True)
class LockHolder(JsonContract):
    """Who holds the device lock (STATE/models/.lock.holder, without its token)."""

    who: str = "?"
    action: str = "?"
    pid: int | None = None
    since: str | None = None


@dataclass(frozen=True)
class ModelsStatus(JsonContract):
    """`crackd models status --json`: everything crack-deploy needs to decide whether the current release serves."""

    state_dir: str
    current: str | None
    previous: str | None
    releases: list[str]
    daemon: StatusReading | None  # STATE/status.json with its age and whether its pid lives
    serving_current: bool
    busy: LockHolder | None = None
    last: DeploymentRecord | None = None
    interrupted: str | None = None  # "ACTION VERSION" of a switch killed half-way; the next command undoes it
    origin: dict | None = None  # the current bundle's base and site (edge.engine.bundle.bundle_origin); None: generic


@dataclass(frozen=True)
class LockAnswer(JsonContract):
    """`crackd models lock --json`: its first line, once the lock is held for the deployment."""

    locked: bool
    token: str
    holder: LockHolder | None
    status: ModelsStatus


@dataclass(frozen=True)
class ReleaseList(JsonContract):
    """`crackd models list --json`, newest first."""

    releases: list[InstalledRelease]


@dataclass(frozen=True)
class HistoryAnswer(JsonContract):
    """`crackd models history --json`, oldest first."""

    history: list[DeploymentRecord]


@dataclass(frozen=True)
class ConfirmAnswer(JsonContract):
    """`crackd models confirm --json`."""

    record: DeploymentRecord


@dataclass(frozen=True)
class Refusal(JsonContract):
    """Any `crackd models ... --json` that failed (`"ok": false`)."""

    error: str
    kind: str  # the exception's class name: DeviceBusy, NotHealthy, ChecksumMismatch, UsageError, ...
    switch: SwitchResult | None = None  # NotHealthy: the switch was made

    def to_json(self) -> dict:
        return to_json(self, omit_none=("switch",))
