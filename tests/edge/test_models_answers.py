"""`crackd models ... --json` as a contract (edge/releases/answers.py, docs/schemas/models/answers.schema.json):
what the real commands print matches the schema and reads back unchanged through the dataclasses crack-deploy uses;
an answer of an older crackd still reads; a wrong type fails naming the key instead of reading None."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import jsonschema
import pytest

from edge.releases.answers import (
    ConfirmAnswer,
    DaemonSignal,
    DeploymentRecord,
    Health,
    HistoryAnswer,
    InstalledRelease,
    Latency,
    LockAnswer,
    LockHolder,
    ModelsStatus,
    Refusal,
    ReleaseList,
    StageReport,
    SwitchResult,
)
from edge.releases.signing import SignatureInfo
from tests.helpers import REPO, SCHEMAS
from tests.helpers.releases import crackd_models, device_config, version_of

SCHEMA = json.loads((SCHEMAS / "models" / "answers.schema.json").read_text())
DEFINITIONS = {
    "stage_report": StageReport,
    "signer": SignatureInfo,
    "latency": Latency,
    "switch_result": SwitchResult,
    "daemon_signal": DaemonSignal,
    "health": Health,
    "installed_release": InstalledRelease,
    "deployment_record": DeploymentRecord,
    "lock_holder": LockHolder,
    "models_status": ModelsStatus,
    "lock_answer": LockAnswer,
    "release_list": ReleaseList,
    "history_answer": HistoryAnswer,
    "confirm_answer": ConfirmAnswer,
    "refusal": Refusal,
}


def valid(answer: dict, definition: str) -> dict:
    """`answer` passes the whole schema and the definition of its command; returns it without `ok`."""
    jsonschema.validate(answer, SCHEMA)
    jsonschema.validate(answer, {"$ref": f"#/$defs/{definition}", "$defs": SCHEMA["$defs"]})
    return {k: v for k, v in answer.items() if k != "ok"}


def round_trips(cls, raw: dict):
    value = cls.from_json(raw)
    assert value.to_json() == raw  # nothing lost, renamed or reordered
    return value


@pytest.mark.parametrize("definition", DEFINITIONS)
def test_each_schema_definition_names_exactly_the_fields_of_its_dataclass_in_their_order(definition):
    cls, schema = DEFINITIONS[definition], SCHEMA["$defs"][definition]
    fields = dataclasses.fields(cls)
    assert list(schema["properties"]) == [f.name for f in fields]
    without_default = [
        f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    assert schema.get("required", []) == without_default


def test_what_the_commands_print_matches_the_schema_and_reads_back_unchanged(state, make_bundle, tmp_path):
    a, b = make_bundle("answers-a"), make_bundle("answers-b")
    config = str(device_config(tmp_path, False))

    def run(*args):
        r = crackd_models(*args, "--state-dir", str(state), "--config", config, "--json")
        return json.loads(r.stdout)

    staged = round_trips(StageReport, valid(run("stage", str(a)), "stage_report"))
    again = round_trips(StageReport, valid(run("stage", str(a)), "stage_report"))
    run("stage", str(b))
    run("activate", version_of(a))
    switched = round_trips(SwitchResult, valid(run("activate", version_of(b)), "switch_result"))
    status = round_trips(ModelsStatus, valid(run("status"), "models_status"))
    listing = round_trips(ReleaseList, valid(run("list"), "release_list"))
    history = round_trips(HistoryAnswer, valid(run("history"), "history_answer"))
    confirmed = round_trips(ConfirmAnswer, valid(run("confirm", version_of(b)), "confirm_answer"))
    refused = round_trips(Refusal, valid(run("activate", "9.9.9-absent"), "refusal"))

    assert staged.latency_ms is not None and staged.latency_ms.total_ms_p50 > 0 and staged.golden["ok"]
    assert again.already_staged and again.latency_ms is None
    assert (switched.version, switched.from_version, switched.daemon.signalled) == (version_of(b), version_of(a), False)
    assert (status.current, status.previous, status.daemon, status.interrupted) == (
        version_of(b),
        version_of(a),
        None,
        None,
    )
    assert [r.version for r in listing.releases if r.current] == [version_of(b)]
    assert [r.outcome for r in history.history][-2:] == ["activated", "activated"]
    assert confirmed.record.outcome == "healthy"
    assert refused.kind == "ReleaseNotFound" and "not staged" in refused.error and refused.switch is None


def test_the_lock_answer_matches_the_schema(state):
    holder = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "models", "lock", "--state-dir", str(state), "--who", "bob", "--json"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        answer = round_trips(LockAnswer, valid(json.loads(holder.stdout.readline()), "lock_answer"))
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert (
        answer.locked and answer.token and answer.holder == LockHolder("bob", "deploy", holder.pid, answer.holder.since)
    )
    assert answer.status.busy is not None and answer.status.busy.who == "bob"


def test_an_answer_of_an_older_crackd_reads_with_defaults():
    status = ModelsStatus.from_json(
        {"ok": True, "state_dir": "/var/lib/crackd", "current": "1.0", "previous": None, "releases": ["1.0"]}
        | {"daemon": None, "serving_current": False, "busy": None, "last": None}
    )
    staged = StageReport.from_json(
        {"version": "1.0", "path": "/x", "sha256": "0" * 64, "signer": None, "golden": {}, "latency_ms": {}}
    )
    assert status.interrupted is None and status.current == "1.0"
    assert staged.latency_ms == Latency() and not staged.already_staged


@pytest.mark.parametrize(
    ("cls", "answer", "message"),
    [
        (
            ModelsStatus,
            {"state_dir": "/s", "current": None, "previous": None, "releases": [], "daemon": None},
            "serving_current: missing",
        ),
        (
            ModelsStatus,
            {
                "state_dir": "/s",
                "current": 3,
                "previous": None,
                "releases": [],
                "daemon": None,
                "serving_current": False,
            },
            "current: expected a string, got 3",
        ),
        (
            SwitchResult,
            {"action": "activate", "version": "1", "from_version": None, "removed": "old"},
            "removed: expected a list",
        ),
        (
            StageReport,
            {"version": "1", "path": "/x", "sha256": "a", "signer": None, "golden": {}, "latency_ms": {"runs": "5"}},
            "latency_ms.runs",
        ),
        (Refusal, {"error": "no", "kind": "NotHealthy", "switch": {"action": "activate"}}, "switch.version: missing"),
    ],
)
def test_an_answer_that_does_not_fit_fails_naming_the_key(cls, answer, message):
    with pytest.raises(ValueError, match=message):
        cls.from_json(answer)


def test_crack_deploy_names_the_key_of_a_device_answer_it_cannot_read():
    from deploy.push import read_answer
    from deploy.ssh import RemoteError

    answer = {"ok": True, "state_dir": "/s", "current": None, "previous": None, "releases": [], "daemon": None}
    with pytest.raises(RemoteError, match=r"cam-01: `crackd models status` answered .*serving_current: missing"):
        read_answer(ModelsStatus, answer, "cam-01", "crackd models status")
