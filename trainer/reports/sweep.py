"""The sweep's Pareto front, the choice of defaults under the latency budgets, and sweep.json / SWEEP.md / plots."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from trainer.evaluation import plots as report_plots
from trainer.evaluation.json_safe import dumps
from trainer.evaluation.latency import load_note
from trainer.evaluation.targets import LATENCY_MS

QUALITY_TIE = 0.005  # configurations within half a point of the best count as equally good: the faster one wins
QUALITY_LABEL = {"classifier": "validation F1 (INT8)", "segmenter": "validation Dice (INT8)"}


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (latency, quality) points: True where no other point is at least as fast and as good, and better in one."""
    flags = []
    for i, (lat, q) in enumerate(points):
        dominated = any(l2 <= lat and q2 >= q and (l2 < lat or q2 > q) for j, (l2, q2) in enumerate(points) if j != i)
        flags.append(not dominated)
    return flags


def choose(rows: list[dict], budget_ms: float) -> tuple[dict | None, str]:
    """The default for one role, and why: the fastest configuration
    within QUALITY_TIE of the best quality inside the budget."""
    scored = [r for r in rows if r.get("quality")]
    if not scored:
        inside = [r["name"] for r in rows if r["latency"]["median_ms"] <= budget_ms]
        return None, (
            f"quality was not measured (latency-only sweep); {len(inside)} of {len(rows)} configurations meet the "
            f"{budget_ms:g} ms budget: {', '.join(inside) or 'none'}. Choose among them once quality is measured."
        )
    inside = [r for r in scored if r["latency"]["median_ms"] <= budget_ms]
    if not inside:
        fastest = min(scored, key=lambda r: r["latency"]["median_ms"])
        return fastest, (
            f"no configuration meets the {budget_ms:g} ms budget; {fastest['name']} is the fastest "
            f"({fastest['latency']['median_ms']:.3f} ms) and was chosen for that reason."
        )
    best = max(r["quality"]["int8"] for r in inside)
    pick = min(
        (r for r in inside if r["quality"]["int8"] >= best - QUALITY_TIE),
        key=lambda r: (r["latency"]["median_ms"], -r["quality"]["int8"]),
    )
    return pick, ""


def _reason(role: str, pick: dict | None, rows: list[dict], budget_ms: float, fallback: str) -> str:
    """The paragraph SWEEP.md gives for a choice (a template: edit it where judgement adds something)."""
    if pick is None or fallback:
        return f"**{role.capitalize()}**: {fallback}"
    metric = pick["quality"]["metric"].upper() if pick["quality"]["metric"] == "f1" else "Dice"
    scored = [r for r in rows if r.get("quality")]
    front = [r for r in scored if r["on_front"]]
    inside = [r for r in scored if r["latency"]["median_ms"] <= budget_ms]
    better_outside = [
        r for r in front if r["quality"]["int8"] > pick["quality"]["int8"] and r["latency"]["median_ms"] > budget_ms
    ]
    faster_on_front = [r for r in front if r["latency"]["median_ms"] < pick["latency"]["median_ms"]]
    best = max(inside, key=lambda r: r["quality"]["int8"])
    if best is pick:
        why = f"it has the highest validation {metric} of them ({pick['quality']['int8']:.4f})"
    else:
        why = (
            f"it is the fastest within {QUALITY_TIE * 100:g} points of the best of "
            f"them, {best['name']} ({best['quality']['int8']:.4f} at "
            f"{best['latency']['median_ms']:.3f} ms), with {pick['quality']['int8']:.4f}"
        )
    text = (
        f"**{role.capitalize()}: {pick['name']}** ({_describe(pick)}, INT8 median {pick['latency']['median_ms']:.3f} "
        f"ms). It is on the Pareto front: no other configuration is both faster and better. Of the {len(inside)} (of "
        f"{len(scored)}) configurations within the {budget_ms:g} ms budget (INT8 median, one thread), {why}."
    )
    if better_outside:
        text += (
            " Better configurations exist only above the budget: "
            + ", ".join(
                f"{r['name']} ({r['quality']['int8']:.4f} at {r['latency']['median_ms']:.3f} ms)"
                for r in better_outside
            )
            + "."
        )
    if faster_on_front:
        text += (
            " Faster front members give up quality: "
            + ", ".join(
                f"{r['name']} ({r['quality']['int8']:.4f} at {r['latency']['median_ms']:.3f} ms)"
                for r in faster_on_front
            )
            + "."
        )
    return text


def _describe(r: dict) -> str:
    if r["role"] == "classifier":
        return f"MobileNetV2 alpha {r['alpha']:g}, {r['size']} px input"
    return f"U-Net {r['variant']}, {r['size']} px input"


def annotate(result: dict) -> dict:
    """Add on_front / within_budget / chosen flags and the choice paragraphs to `result`."""
    result["budgets_ms"] = dict(LATENCY_MS)
    result["chosen"] = {}
    for role in ("classifier", "segmenter"):
        rows = [r for r in result["rows"] if r["role"] == role]
        if not rows:
            continue
        scored = [r for r in rows if r.get("quality")]
        flags = pareto_front([(r["latency"]["median_ms"], r["quality"]["int8"]) for r in scored])
        for r in rows:
            r["within_budget"] = r["latency"]["median_ms"] <= LATENCY_MS[role]
            r["on_front"] = False
            r["chosen"] = False
        for r, on in zip(scored, flags):
            r["on_front"] = on
        pick, fallback = choose(rows, LATENCY_MS[role])
        if pick is not None:
            pick["chosen"] = True
        result["chosen"][role] = {
            "name": pick["name"] if pick else None,
            "reason": _reason(role, pick, rows, LATENCY_MS[role], fallback),
        }
    return result


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _trained(r: dict) -> str:
    q = r.get("quality")
    if not q:
        return "not trained (latency only)"
    s = q.get("schedule", {})
    where = "short run here" if q.get("trained_here") else f"run {Path(q['run_dir']).name}"
    done = q.get("epochs_completed")
    total = s.get("epochs")
    epochs = (
        f"{done} of {total} epochs"
        if done is not None and done != total
        else f"{total} epoch{'' if total == 1 else 's'}"
    )
    return f"{where}: {epochs}, {s.get('train_images')} train imgs"


def table_lines(result: dict) -> list[str]:
    """The sweep tables (Markdown), one per role."""
    lines = []
    for role, title in (
        ("classifier", "Classifier: MobileNetV2 alpha x input size"),
        ("segmenter", "Segmenter: U-Net sizes"),
    ):
        rows = [r for r in result["rows"] if r["role"] == role]
        if not rows:
            continue
        budget = LATENCY_MS[role]
        metric = "F1" if role == "classifier" else "Dice"
        lines += [
            f"### {title}",
            "",
            f"| Config | {'Alpha' if role == 'classifier' else 'Size'} | Input px | Params | INT8 KiB | Median ms | "
            f"p95 ms | Val {metric} INT8 | Val {metric} FP32 | Quality from | Pareto front | Within {budget:g} ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            q = r.get("quality") or {}
            name = f"**{r['name']}** (chosen)" if r.get("chosen") else r["name"]
            lines.append(
                f"| {name} | {r['alpha'] if role == 'classifier' else r['variant']} | {r['size']} | "
                f"{r['params']:,} | {r['int8_bytes'] / 1024:.0f} | {r['latency']['median_ms']:.3f} "
                f"| {r['latency']['p95_ms']:.3f} | {_fmt(q.get('int8'))} | {_fmt(q.get('fp32'))} | "
                f"{_trained(r)} | {'yes' if r.get('on_front') else ('-' if not q else 'no')} | "
                f"{'yes' if r.get('within_budget') else 'no'} |"
            )
        lines.append("")
    return lines


def _plots(out_dir: Path, result: dict) -> dict:
    files = {}
    roles = [role for role in ("classifier", "segmenter") if any(r["role"] == role for r in result["rows"])]
    fig, axes = report_plots.figure(len(roles))
    for ax, role in zip(axes, roles):
        rows = [
            {"label": r["name"], "latency_ms": r["latency"]["median_ms"], "p95_ms": r["latency"]["p95_ms"]}
            for r in result["rows"]
            if r["role"] == role
        ]
        report_plots.latency_bars(rows, LATENCY_MS[role], f"{role}: INT8 latency", ax)
    files["latency"] = report_plots.save(fig, out_dir / "sweep_latency.png").name
    scored_roles = [role for role in roles if any(r["role"] == role and r.get("quality") for r in result["rows"])]
    if scored_roles:
        fig, axes = report_plots.figure(len(scored_roles))
        for ax, role in zip(axes, scored_roles):
            points = [
                {
                    "label": r["name"].replace("cls_", ""),
                    "latency_ms": r["latency"]["median_ms"],
                    "quality": r["quality"]["int8"],
                    "on_front": r["on_front"],
                    "chosen": r["chosen"],
                }
                for r in result["rows"]
                if r["role"] == role and r.get("quality")
            ]
            report_plots.pareto(points, LATENCY_MS[role], QUALITY_LABEL[role], f"{role}: quality vs latency", ax)
        files["pareto"] = report_plots.save(fig, out_dir / "sweep_pareto.png").name
    return files


def render(result: dict) -> str:
    cfg, mach = result["config"], result["machine"]
    scored = [r for r in result["rows"] if r.get("quality")]
    here = [r for r in scored if r["quality"].get("trained_here")]
    reused = [r for r in scored if not r["quality"].get("trained_here")]
    lines = [
        "# Model-selection sweep",
        "",
        f"Generated {result['generated']} on {mach.get('cpu')} ({mach.get('cpu_count')} cores).",
        "",
        f"**Latency**: every configuration converted to full-integer INT8 (calibrated on {cfg['calibration_images']} "
        "images through the device preprocessing) and timed with the edge runtime on one thread, median and p95 of "
        f"{cfg['latency_runs']} runs after warm-up, interpreter call only; all models were timed in "
        f"{cfg.get('latency_rounds', 1)} interleaved rounds and each keeps its round with the lowest median.",
    ]
    note = load_note([r["latency"] for r in result["rows"]])
    if note:
        lines[-1] += " " + note
    lines += ["", "**Quality is from a SHORTENED schedule, not the shipped training.** "]
    if here:
        lines[-1] += (
            f"{len(here)} configurations were trained here for {cfg['epochs']} epochs (classifier) / "
            f"{cfg['seg_epochs']} (segmenter) on a random subset of {cfg['train_images']} training images "
            f"(data: {', '.join(Path(d).name for d in cfg['data']) or 'none'}; + {cfg['synth']} synthetic), "
            f"and validated on up to {cfg['val_images']} images of each run's validation split. "
        )
    if reused:
        lines[-1] += (
            f"{len(reused)} configurations reuse runs from "
            f"`{cfg['from_runs']}` with their own schedule (see each row). "
        )
    if not scored:
        lines[-1] += "This was a latency-only sweep: no quality was measured. "
    lines[-1] += (
        "Such short runs rank configurations roughly; they do not predict the final quality of a fully trained model, "
        "and differences of a few points between rows are within noise."
    )
    lines += ["", "## Results", ""] + table_lines(result)
    generic, reused_note = (
        "latency from the untrained architecture (same graph as a trained one)",
        "INT8 file reused from an earlier run of the sweep",
    )
    if any(generic in r.get("notes", []) for r in result["rows"]):
        lines += [
            "Rows without a trained run were timed on the untrained architecture: the same graph, so the same speed.",
            "",
        ]
    n_reused = sum(reused_note in r.get("notes", []) for r in result["rows"])
    if n_reused:
        lines += [
            f"{n_reused} INT8 files were converted by an earlier invocation "
            "of the sweep from the same source and only re-timed.",
            "",
        ]
    special = [(r["name"], n) for r in result["rows"] for n in r.get("notes", []) if n not in (generic, reused_note)]
    if special:
        lines += ["Notes:", ""] + [f"- {name}: {note}" for name, note in special] + [""]
    plots = result.get("plots", {})
    if "pareto" in plots:
        lines += [
            "![Quality against INT8 latency; the Pareto front in red, "
            f"the chosen configuration circled]({plots['pareto']})",
            "",
        ]
    if "latency" in plots:
        lines += [f"![INT8 median latency per configuration (p95 whiskers) against the budget]({plots['latency']})", ""]
    lines += [
        "## Choice of the shipped defaults",
        "",
        "Budgets (issue targets, INT8 median on one core): classifier <= "
        f"{LATENCY_MS['classifier']:g} ms, segmenter <= {LATENCY_MS['segmenter']:g} ms. Rule: inside "
        "the budget, take the best validation quality; among configurations within "
        f"{QUALITY_TIE * 100:g} points of it, take the fastest (so the choice is on the Pareto front).",
        "",
    ]
    for role in ("classifier", "segmenter"):
        if role in result.get("chosen", {}):
            lines += [result["chosen"][role]["reason"], ""]
    return "\n".join(lines)


def write(out_dir: Path, result: dict) -> dict:
    """Annotate `result`, draw the plots, write sweep.json and SWEEP.md; returns the annotated result."""
    out_dir = Path(out_dir)
    result["generated"] = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    annotate(result)
    result["plots"] = _plots(out_dir, result)
    (out_dir / "sweep.json").write_text(dumps(result))
    (out_dir / "SWEEP.md").write_text(render(result))
    partial = out_dir / "sweep.partial.json"
    if partial.exists():
        partial.unlink()
    return result
