"""The shipped model's targets (issue "The shipped default") checked against an evaluation report.

Each check names the data set it used and whether those images were unseen in
training; a target whose data was not evaluated is "not measured", never "met".
"""

from __future__ import annotations

import math

CLASSIFIER_IN_DOMAIN_F1 = 0.99
CLASSIFIER_CROSS_SURFACE_F1 = 0.95
CLASSIFIER_CROSS_SURFACE_BALANCED_ACCURACY = 0.90
SEGMENTER_CROSS_SURFACE_TOLERANT_F1 = 0.75  # leave-one-dataset-out, on each held-out source
INT8_GAP_POINTS = 0.5
LATENCY_MS = {"classifier": 1.0, "segmenter": 4.0}
# The metrics reported per model (and compared INT8 vs FP32), in table order.
HEADLINE = {
    "classifier": ("accuracy", "precision", "recall", "f1", "roc_auc"),
    "segmenter": ("precision", "recall", "dice", "iou", "tolerant_f1"),
}


def _first(datasets: dict, candidates: list[str]) -> str | None:
    return next((k for k in candidates if k in datasets), None)


def _overlap_note(entry: dict) -> str:
    if entry.get("unseen") is True:
        return "images never seen in training"
    if entry.get("unseen") is False:
        return "NOT held out: the model trained on most of these images, so this overstates real-world quality"
    return "unknown whether these images were used in training"


def _quality_check(
    tid: str, name: str, report: dict, role: str, candidates: list[str], metric: str, minimum: float
) -> dict:
    datasets = report[role]["datasets"]
    key = _first(datasets, candidates)
    check = {"id": tid, "name": name, "requirement": f"{metric} >= {minimum:.2f} (INT8)", "dataset": key}
    if key is None:
        return {
            **check,
            "value": None,
            "measured": "not measured",
            "met": None,
            "note": f"no evaluated data set among {', '.join(candidates)}",
        }
    value = datasets[key]["int8"][metric]
    return {
        **check,
        "value": value,
        "measured": f"{value:.4f}",
        "met": bool(value >= minimum),
        "note": _overlap_note(datasets[key]),
    }


def _gap_check(report: dict) -> dict:
    worst, where = None, None
    for role in ("classifier", "segmenter"):
        for key, entry in report[role]["datasets"].items():
            for metric in HEADLINE[role]:
                diff = entry.get("diff_points", {}).get(metric)
                if diff is not None and math.isfinite(diff) and (worst is None or abs(diff) > abs(worst)):
                    worst, where = diff, f"{role} {metric} on {key}"
    check = {
        "id": "int8_gap",
        "name": "INT8 within 0.5 points of FP32 on each metric",
        "requirement": f"INT8 minus FP32 within ±{INT8_GAP_POINTS} points on every metric and data set",
        "dataset": where,
    }
    if worst is None:
        return {
            **check,
            "value": None,
            "measured": "not measured",
            "met": None,
            "note": "no FP32 reference in the bundle",
        }
    return {
        **check,
        "value": worst,
        "measured": f"largest difference {worst:+.2f} points ({where})",
        "met": bool(abs(worst) <= INT8_GAP_POINTS),
        "note": "INT8 minus FP32; negative = INT8 worse",
    }


def _latency_check(report: dict, role: str) -> dict:
    limit = LATENCY_MS[role]
    lat = report.get("latency", {}).get(role, {}).get("int8")
    check = {
        "id": f"{role}_latency",
        "name": f"{role.capitalize()} INT8 latency, one core of this machine",
        "requirement": f"median <= {limit:g} ms",
        "dataset": None,
    }
    if not lat:
        return {**check, "value": None, "measured": "not measured", "met": None, "note": ""}
    note = (
        f"p95 {lat['p95_ms']:.2f} ms, fastest {lat['min_ms']:.2f} ms over {lat['runs']} runs, "
        f"{lat['threads']} thread, {lat['runtime']}"
    )
    if (lat.get("load_average") or 0) > 1.0:
        note += f"; load average {lat['load_average']:.1f} from other jobs, " + (
            "timed at real-time priority"
            if lat.get("priority") == "realtime"
            else "timed at normal priority: may be inflated"
        )
    return {
        **check,
        "value": lat["median_ms"],
        "measured": f"{lat['median_ms']:.3f} ms",
        "met": bool(lat["median_ms"] <= limit),
        "note": note,
    }


def _crossval_checks(report: dict) -> list[dict]:
    """Tolerant F1 of the leave-one-dataset-out segmenters on each held-out source, at the bundle's pixel threshold."""
    cv = report.get("crossval") or {}
    threshold = report["models"]["segmenter"]["threshold"]
    checks = []
    for r in cv.get("segmenter", []):
        curve = r["scales"]["model scale"]["curve"]
        row = min(curve, key=lambda p: abs(p["threshold"] - threshold))
        value = row["tolerant_f1"]
        checks.append(
            {
                "id": f"segmenter_cross_surface_{r['heldout']}",
                "dataset": r["heldout"],
                "name": f"Segmenter tolerant F1 (2 px) on {r['heldout']}, a source left out of training",
                "requirement": f"tolerant F1 >= {SEGMENTER_CROSS_SURFACE_TOLERANT_F1:.2f} (INT8)",
                "value": value,
                "measured": f"{value:.4f} at threshold {row['threshold']:.2f}",
                "met": bool(value >= SEGMENTER_CROSS_SURFACE_TOLERANT_F1),
                "note": (
                    f"leave-one-dataset-out run {r['run']} ({r['images']} images never seen in training); "
                    "see CROSSVAL.md"
                ),
            }
        )
    if not checks:
        checks.append(
            {
                "id": "segmenter_cross_surface",
                "name": "Segmenter tolerant F1 on a source left out of training",
                "requirement": f"tolerant F1 >= {SEGMENTER_CROSS_SURFACE_TOLERANT_F1:.2f} (INT8)",
                "dataset": None,
                "value": None,
                "measured": "not measured",
                "met": None,
                "note": "no crossval.json beside the bundle (crack-train crossval)",
            }
        )
    return checks


def check_targets(report: dict, in_domain: str = "metu_cls", cross_surface: str = "sut_seg") -> list[dict]:
    """All target checks for `report` (the dict evaluate_bundle builds), in the issue's order."""
    cross = [f"heldout:{cross_surface}", f"{cross_surface}:patches"]
    return [
        _quality_check(
            "classifier_in_domain",
            f"Classifier F1 on {in_domain}-style patches never seen in training",
            report,
            "classifier",
            [f"heldout:{in_domain}", in_domain],
            "f1",
            CLASSIFIER_IN_DOMAIN_F1,
        ),
        _quality_check(
            "classifier_cross_surface",
            f"Classifier F1 on patches from a surface left out of training ({cross_surface})",
            report,
            "classifier",
            cross,
            "f1",
            CLASSIFIER_CROSS_SURFACE_F1,
        ),
        _quality_check(
            "classifier_cross_surface_balanced",
            f"Classifier balanced accuracy on those patches ({cross_surface})",
            report,
            "classifier",
            cross,
            "balanced_accuracy",
            CLASSIFIER_CROSS_SURFACE_BALANCED_ACCURACY,
        ),
        *_crossval_checks(report),
        _gap_check(report),
        _latency_check(report, "classifier"),
        _latency_check(report, "segmenter"),
    ]
