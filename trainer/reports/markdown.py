"""REPORT.md: the evaluation report written for a technician, rendered from report.json's dict."""

from __future__ import annotations

import logging
from pathlib import Path

from trainer.evaluation.latency import load_note
from trainer.evaluation.targets import HEADLINE

log = logging.getLogger("crack-train.report")

METRIC_NAMES = {
    "accuracy": "Accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "roc_auc": "ROC-AUC",
    "dice": "F1 (Dice)",
    "iou": "IoU",
    "tolerant_f1": "tolerant F1 (2 px)",
    "balanced_accuracy": "balanced accuracy",
}
RESULT = {True: "✅ met", False: "❌ not met", None: "— not measured"}


def _cell(text) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _pct(value) -> str:
    return "n/a" if value is None else f"{value * 100:.2f} %"


def _pts(value) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def _seen(entry: dict) -> str:
    labels = {
        True: "held out (never seen in training)",
        False: "**seen in training**",
        None: "unknown whether seen in training",
    }
    return labels[entry.get("unseen")]


def _ordered(datasets: dict) -> list[str]:
    """Held-out sets first (they carry the headline numbers), then folders."""
    return sorted(datasets, key=lambda k: (not k.startswith("heldout:"), k.endswith(":all"), k))


def _targets(report: dict) -> list[str]:
    checks = report["targets"]
    met = sum(1 for c in checks if c["met"] is True)
    failed = [c for c in checks if c["met"] is False]
    lines = [
        "## Targets",
        "",
        f"{met} of {len(checks)} targets met"
        + (f"; not met: {', '.join(c['name'] for c in failed)}." if failed else "."),
        "",
        "| Target | Required | Measured | Result | Measured on |",
        "|---|---|---|---|---|",
    ]
    for c in checks:
        where = c["dataset"] or ""
        if c.get("note"):
            where = f"{where} ({c['note']})" if where else c["note"]
        lines.append(
            f"| {_cell(c['name'])} | {_cell(c['requirement'])} | "
            f"{_cell(c['measured'])} | {RESULT[c['met']]} | {_cell(where)} |"
        )
    return lines + [""]


def _how_to_read(report: dict) -> list[str]:
    cls_t, seg_t = report["models"]["classifier"]["threshold"], report["models"]["segmenter"]["threshold"]
    return [
        "## How to read this report",
        "",
        "- **INT8** is the model the device runs (`classifier.tflite`, `segmenter.tflite`); **FP32** "
        "is the unquantized reference kept in `reference/`. The difference column shows what "
        "quantization costs, in percentage points (INT8 minus FP32; negative means INT8 is worse).",
        f"- The classifier says crack when P(crack) >= {cls_t:g}; the segmenter marks a pixel as "
        f"crack when its P(crack) >= {seg_t:g} (the thresholds stored in the bundle's manifest).",
        "- **Precision**: of what the model called crack, the share that really is. **Recall**: of the real cracks, "
        "the share the model found. **F1** balances the two. **ROC-AUC**: how well the scores rank cracks above "
        "clean surfaces at any threshold. For the segmenter these are counted per pixel, at the model's input "
        "resolution; **Dice** equals the pixel F1 and **IoU** is the overlap of predicted and true crack area.",
        "- **Held out** data sets are the test splits the training runs set aside: the models never saw them, "
        "so they are the honest numbers. A data set marked *seen in training* overstates real-world quality.",
        "",
    ]


def _summary_table(report: dict, role: str) -> list[str]:
    datasets = report[role]["datasets"]
    if not datasets:
        return [f"No {role} data set was evaluated.", ""]
    lines = ["| Data set | Images | Metric | INT8 | FP32 | Difference (points) |", "|---|---|---|---|---|---|"]
    for key in _ordered(datasets):
        e = datasets[key]
        if e.get("no_cracks"):
            fp32 = e["fp32"]["false_alarm_pixel_rate"] if e.get("fp32") else None
            diff = (e["int8"]["false_alarm_pixel_rate"] - fp32) * 100 if fp32 is not None else None
            lines.append(
                f"| **{key}** ({_seen(e)}; no cracks in this set) | {e['n']} | False-alarm pixels (lower is better) | "
                f"{_pct(e['int8']['false_alarm_pixel_rate'])} | {_pct(fp32)} | {_pts(diff)} |"
            )
            lines.append(
                f"|  |  | Crack-free images with any crack pixel | {e['int8']['clean_images_flagged']} of "
                f"{e['int8']['clean_images']} | {e['fp32']['clean_images_flagged'] if e.get('fp32') else 'n/a'} "
                f"of {e['int8']['clean_images']} |  |"
            )
            continue
        for i, metric in enumerate(HEADLINE[role]):
            label = f"**{key}** ({_seen(e)})" if i == 0 else ""
            n = str(e["n"]) if i == 0 else ""
            fp32 = e.get("fp32", {}).get(metric) if e.get("fp32") else None
            lines.append(
                f"| {label} | {n} | {METRIC_NAMES[metric]} | {_pct(e['int8'][metric])} | {_pct(fp32)} | "
                f"{_pts(e.get('diff_points', {}).get(metric))} |"
            )
    return lines + [""]


def _classifier_details(report: dict) -> list[str]:
    lines = ["## Classifier in detail", ""]
    for key in _ordered(report["classifier"]["datasets"]):
        e = report["classifier"]["datasets"][key]
        m = e["int8"]
        lines += [
            f"### {key}",
            "",
            f"Source: {e['source']}. {e['positives']} crack / {e['n'] - e['positives']} clean images.",
            "",
            f"INT8 at threshold {m['threshold']:g}: {m['tp']} cracks found, {m['fn']} missed, {m['fp']} false alarms, "
            f"{m['tn']} clean images passed.",
        ]
        best = e.get("best_f1_threshold", {}).get("int8")
        if best:
            lines.append(
                f"The best INT8 F1 on this set would be {_pct(best['f1'])} at threshold {best['threshold']:.2f}."
            )
        lines.append("")
        for kind, caption in (
            ("confusion", "Confusion matrix"),
            ("precision_recall", "Precision-recall curve"),
            ("threshold_sweep", "Precision, recall and F1 against the threshold"),
        ):
            if kind in e["plots"]:
                lines.append(f"![{caption}, {key}]({e['plots'][kind]})")
        lines.append("")
    return lines


def _segmenter_details(report: dict) -> list[str]:
    lines = ["## Segmenter in detail", ""]
    for key in _ordered(report["segmenter"]["datasets"]):
        e = report["segmenter"]["datasets"][key]
        lines += [
            f"### {key}",
            "",
            f"Source: {e['source']}. {e['images_with_cracks']} of {e['n']} images contain cracks; "
            f"{e['crack_pixel_fraction'] * 100:.2f} % of pixels are crack. INT8 marked "
            f"{e['int8']['false_alarm_pixel_rate'] * 100:.2f} % of crack-free pixels as crack"
            + (
                f" and flagged {e['int8']['clean_images_flagged']} of {e['int8']['clean_images']} crack-free images."
                if e["int8"]["clean_images"]
                else "."
            ),
        ]
        best = e.get("best_f1_threshold", {}).get("int8")
        if best:
            lines.append(
                f"The best INT8 Dice on this set would be {_pct(best['f1'])} at threshold {best['threshold']:.2f}."
            )
        lines.append("")
        if "overlays" in e["plots"]:
            lines.append(
                f"![Samples: image, true mask (green), predicted masks (red), {key}]({e['plots']['overlays']})"
            )
        if "threshold_sweep" in e["plots"]:
            lines.append(
                f"![Pixel precision, recall and Dice against the threshold, {key}]({e['plots']['threshold_sweep']})"
            )
        lines.append("")
    return lines


def _latency(report: dict) -> list[str]:
    from trainer.evaluation.targets import LATENCY_MS

    mach = report.get("machine", {})
    lines = [
        "## Latency",
        "",
        f"Measured with the edge runtime on one thread, {mach.get('cpu', '?')} "
        f"({mach.get('cpu_count', '?')} cores), interpreter call only (input already at the model's "
        f"size), after warm-up runs; the models were timed in {report['config'].get('latency_rounds', 1)} "
        "interleaved rounds and each keeps its round with the lowest median.",
        "",
        "| Model | Variant | Median | p95 | Fastest | Runs | Target (INT8 median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for role, variants in report["latency"].items():
        for variant, lat in variants.items():
            target = f"<= {LATENCY_MS[role]:g} ms" if variant == "int8" else ""
            lines.append(
                f"| {role} | {variant.upper()} | {lat['median_ms']:.3f} ms | "
                f"{lat['p95_ms']:.3f} ms | {lat['min_ms']:.3f} ms | {lat['runs']} | {target} |"
            )
    note = load_note([lat for variants in report["latency"].values() for lat in variants.values()])
    if note:
        lines += ["", note]
    return lines + [""]


def _datasets(report: dict) -> list[str]:
    lines = [
        "## Data sets evaluated",
        "",
        "| Model | Data set | Images | Source | In training? |",
        "|---|---|---|---|---|",
    ]
    for role in ("classifier", "segmenter"):
        for key in _ordered(report[role]["datasets"]):
            e = report[role]["datasets"][key]
            lines.append(f"| {role} | {_cell(key)} | {e['n']} | {_cell(e['source'])} | {_seen(e)} |")
    return lines + [""]


def _source_lines(sources: list[dict]) -> list[str]:
    lines = []
    for s in sources:
        lines.append(f"- **{s['folder']}**: {s['dataset'] or 'no description recorded'}")
        if s.get("content"):
            lines.append(f"  - Content: {s['content']}")
        lines.append(f"  - Licence: {s['licence'].lstrip('- ') or 'not recorded'}")
        if s.get("citation"):
            lines.append(f"  - Cite: {s['citation']}")
        if s.get("source_repo"):
            lines.append(f"  - Obtained from: {s['source_repo']}")
        lines.append(f"  - Recorded in: {s['from']}")
    return lines


def _provenance(report: dict) -> list[str]:
    prov = report.get("provenance", {})
    lines = [
        "## Training data: provenance and licences",
        "",
        "The models in this bundle were trained on the data below (plus procedurally generated "
        "images where a run says so). Cite these data sets wherever the models are shipped.",
        "",
    ]
    lines += _source_lines(prov.get("training", [])) or ["- The bundle's manifest records no training data folders."]
    runs = prov.get("runs", [])
    if runs:
        lines += [
            "",
            "| Training run | Model | Architecture | Data | Kept out | "
            "Synthetic | Epochs (max) | Images (train / val / test) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in runs:
            spec = ", ".join(f"{k}={v}" for k, v in r["spec"].items() if k != "architecture")
            c = r.get("counts", {})
            test = sum((c.get("test") or {}).values()) if isinstance(c.get("test"), dict) else c.get("test", "")
            lines.append(
                f"| {r['run']} | {r['kind']} | {r['spec'].get('architecture', '')} ({spec}) | {', '.join(r['data'])} | "
                f"{', '.join(r['holdout']) or '-'} | {r['synthetic']} | {r['epochs']} | "
                f"{c.get('train', '?')} / {c.get('val', '?')} / {test} |"
            )
    if prov.get("evaluation"):
        lines += ["", "### Evaluation-only data", "", "Folders used in this report but not in training:", ""]
        lines += _source_lines(prov["evaluation"])
    return lines + [""]


def render(report: dict) -> str:
    """The whole REPORT.md."""
    b = report["bundle"]
    m = report["models"]
    lines = [
        f"# crackd model report: bundle {b['version']}",
        "",
        f"Bundle `{b['path']}` (manifest sha256 `{b['manifest_sha256'][:16]}...`, created {b['created']}). "
        f"Generated {report['generated']} by {report['generated_by']}.",
        "",
        f"- Classifier: {m['classifier']['architecture'].get('architecture', '?')}, input "
        f"{m['classifier']['input_size'][0]} px, {m['classifier']['bytes'] / 1024:.0f} KiB INT8.",
        f"- Segmenter: {m['segmenter']['architecture'].get('architecture', '?')}, input "
        f"{m['segmenter']['input_size'][0]} px, {m['segmenter']['bytes'] / 1024:.0f} KiB INT8.",
        "",
    ]
    lines += _targets(report)
    if report.get("crossval"):
        from trainer.evaluation.crossval import render as render_crossval

        # Beside the in-domain figures: the same recipe scored on sources it never saw (chosen on these, not on
        # in-domain).
        lines += render_crossval(report["crossval"], heading="##").split("\n")
    if report.get("suites"):
        from trainer.reports.suites import render as render_suites

        lines += render_suites(report["suites"], heading="##").split("\n")
    lines += _how_to_read(report)
    lines += ["## INT8 against FP32, per data set", "", "### Classifier", ""] + _summary_table(report, "classifier")
    lines += ["### Segmenter", ""] + _summary_table(report, "segmenter")
    lines += _latency(report)
    lines += _classifier_details(report)
    lines += _segmenter_details(report)
    lines += _datasets(report)
    lines += _provenance(report)
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines)


def write(out_dir: Path, report: dict) -> Path:
    """REPORT.md of `report` (trainer.evaluation.evaluate.evaluate_bundle's result) in `out_dir`; returns its path."""
    path = Path(out_dir) / "REPORT.md"
    path.write_text(render(report))
    log.info("wrote %s", path)
    return path
