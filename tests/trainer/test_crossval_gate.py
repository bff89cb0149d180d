"""The classifier gate threshold chosen by `crack-train crossval`, and read by `crack-train export --crossval`."""

import argparse
import json

import numpy as np
import pytest

from trainer.cli.export import chosen_thresholds
from trainer.evaluation.crossval import choose_gate, gate_curve, render

GRID = np.round(np.arange(0.1, 0.91, 0.1), 2)


def test_the_gate_is_the_highest_threshold_with_the_recall_on_every_source():
    # Source a: 50 cracks scoring 0.45 .. 0.94 (one in fifty below 0.46), 4 crack-free at 0.05, 0.35, 0.55, 0.95.
    a_scores = np.concatenate([np.linspace(0.45, 0.94, 50), [0.05, 0.35, 0.55, 0.95]])
    a_labels = np.array([1] * 50 + [0] * 4)
    # Source b: cracks at 0.25 and above pass 0.2 only (recall 1.0 at 0.2, 0.9 at 0.3), 2 crack-free.
    b_scores = np.concatenate([[0.25], np.full(9, 0.8), [0.1, 0.6]])
    b_labels = np.array([1] * 10 + [0] * 2)
    gate = choose_gate({"a": gate_curve(a_scores, a_labels, GRID), "b": gate_curve(b_scores, b_labels, GRID)}, 0.98)
    a, b = gate["sources"]["a"], gate["sources"]["b"]
    # a: at 0.4 all 50 pass; at 0.5 only 45 of 50 (0.90) -> 0.4, where 2 of 4 crack-free pass.
    assert a["threshold"] == 0.4 and a["met"] and a["recall"] == 1.0 and a["crack_free_passing"] == 0.5
    assert b["threshold"] == 0.2 and b["met"] and b["recall"] == 1.0 and b["crack_free_passing"] == 0.5
    assert gate["threshold"] == 0.2 and gate["met"] is True  # the minimum over sources
    assert a["at_gate"] == {"recall": 1.0, "crack_free_passing": 0.75}  # what the segmenter runs on for a at 0.2

    md = render(
        {
            "segmenter": [],
            "classifier": [{"run": "r", "heldout": "a", "sets": {}}],
            "classifier_threshold": 0.5,
            "classifier_gate": gate,
        }
    )
    assert "Gate threshold chosen on these held-out sources: **0.20**" in md and "| a | 0.40 | 1.000 | 0.500 |" in md


def test_a_source_no_threshold_serves_gets_the_lowest_and_is_stated_as_a_miss():
    # Half the cracks score 0.0: no threshold of the grid (lowest 0.1) passes 98 % of them.
    missing = gate_curve(np.array([0.0, 0.0, 0.9, 0.9, 0.2]), np.array([1, 1, 1, 1, 0]), GRID)
    fine = gate_curve(np.array([0.7, 0.7, 0.1]), np.array([1, 1, 0]), GRID)
    gate = choose_gate({"missing": missing, "fine": fine}, 0.98)
    assert gate["sources"]["missing"] == {
        "threshold": 0.1,
        "recall": 0.5,
        "crack_free_passing": 1.0,
        "met": False,
        "at_gate": {"recall": 0.5, "crack_free_passing": 1.0},
    }
    assert gate["sources"]["fine"]["threshold"] == 0.7 and gate["sources"]["fine"]["met"]
    assert gate["threshold"] == 0.1 and gate["met"] is False
    md = "\n".join(
        render(
            {
                "classifier": [{"run": "r", "heldout": "x", "sets": {}}],
                "classifier_threshold": 0.5,
                "classifier_gate": gate,
            }
        ).split("\n")
    )
    assert "**missed**" in md and "| missing | none (miss; lowest 0.10) | 0.500 |" in md


def _export_args(**given) -> argparse.Namespace:
    return argparse.Namespace(
        **{
            "crossval": None,
            "classifier_threshold": None,
            "segmenter_threshold": None,
            "classifier_gate_threshold": None,
            **given,
        }
    )


def test_export_takes_the_gate_threshold_from_crossval_with_its_source(tmp_path):
    cv = tmp_path / "crossval.json"
    cv.write_text(
        json.dumps({"classifier_threshold": 0.4, "segmenter_threshold": 0.3, "classifier_gate_threshold": 0.15})
    )
    chosen = chosen_thresholds(_export_args(crossval=str(cv)))
    assert chosen.thresholds == {"classifier": 0.4, "segmenter": 0.3} and chosen.gate == 0.15
    assert chosen.gate_source == chosen.source == "leave-one-dataset-out validation (crossval.json)"
    # The command line replaces it, and says so.
    chosen = chosen_thresholds(_export_args(crossval=str(cv), classifier_gate_threshold=0.25))
    assert chosen.gate == 0.25 and chosen.gate_source == "given on the command line"
    # A crossval.json from before the gate: no gate, as before.
    cv.write_text(json.dumps({"classifier_threshold": 0.4}))
    assert chosen_thresholds(_export_args(crossval=str(cv))).gate is None


def test_crossval_against_a_previous_bundle_tabulates_deltas_at_each_ones_threshold():
    from trainer.evaluation.crossval import loo_deltas, render_deltas

    def seg(f1_at_04: float, f1_at_06: float) -> dict:
        curve = [
            {"threshold": t, "tolerant_f1": f, "tolerant_precision": f, "tolerant_recall": f, "dice": f}
            for t, f in ((0.4, f1_at_04), (0.6, f1_at_06))
        ]
        return {"heldout": "sut_seg", "scales": {"model scale": {"curve": curve}}}

    now = {"segmenter": [seg(0.80, 0.70)], "segmenter_threshold": 0.4}
    before = {"segmenter": [seg(0.50, 0.75)], "segmenter_threshold": 0.6}  # its own threshold: 0.75
    deltas = loo_deltas(now, before, "bundle 1.1.0")
    f1 = next(r for r in deltas["rows"] if r["metric"] == "tolerant_f1")
    assert (f1["this"], f1["previous"]) == (0.80, 0.75) and f1["delta"] == pytest.approx(0.05)
    table = "\n".join(render_deltas(deltas, "##"))
    assert "Against bundle 1.1.0" in table and "| segmenter | sut_seg | tolerant f1 | 0.800 | 0.750 | +0.050 |" in table
