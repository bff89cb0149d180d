"""`crack-train site`: every step explains itself, and a step that cannot run yet says which step comes first."""

from __future__ import annotations

import pytest

from trainer.cli import main

STEPS = ("pull", "label", "adapt", "push", "status")


@pytest.mark.parametrize("step", STEPS)
def test_every_step_has_help(step, capsys):
    with pytest.raises(SystemExit) as done:
        main(["site", step, "--help"])
    assert done.value.code == 0
    assert "--site-dir" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("label", "no frames yet (run crack-train site pull line-1 HOST ... first)"),
        ("adapt", "no labelled frames (crack-train site label line-1 first)"),
        ("push", "no site bundle yet (crack-train site adapt line-1 first, or --bundle DIR)"),
        ("pull", "no devices: name them (HOST ... or --hosts-file)"),
    ],
)
def test_a_step_run_too_early_names_the_step_before_it(step, expected, tmp_path, capsys):
    assert main(["site", step, "line-1", "--site-dir", str(tmp_path / "line-1")]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


def test_status_of_a_new_site_says_it_has_nothing_yet(tmp_path, capsys):
    assert main(["site", "status", "line-1", "--site-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "devices: none yet" in out and "0 frames: 0 labelled" in out and "site bundle: none yet" in out
