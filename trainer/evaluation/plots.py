"""PNG plots for the evaluation report (matplotlib, Agg backend: no display needed).

Each function writes one file and returns its path. INT8 (what the device runs)
is drawn solid, the FP32 reference dashed, so the quantization cost is visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

VARIANT_STYLE: dict[str, dict[str, Any]] = {
    "int8": {"color": "tab:blue", "linestyle": "-"},
    "fp32": {"color": "tab:orange", "linestyle": "--"},
}


def _save(fig, path: Path, palette: bool = False) -> Path:
    """Write a palette PNG (the bundle, plots included, stays under 5 MB): 64 colours for line plots,
    256 at a lower resolution for photo-heavy figures (`palette`)."""
    from io import BytesIO

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=55 if palette else 90, bbox_inches="tight")
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(256 if palette else 64).save(path, optimize=True)
    plt.close(fig)
    return path


def confusion_matrices(metrics: dict[str, dict], title: str, path: Path) -> Path:
    """Side-by-side 2x2 confusion matrices, one per variant ({'int8': binary_metrics, 'fp32': ...})."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), squeeze=False)
    for ax, (variant, m) in zip(axes[0], metrics.items()):
        cm = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, cm.max()))
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black", fontsize=12)
        ax.set_xticks([0, 1], ["no crack", "crack"])
        ax.set_yticks([0, 1], ["no crack", "crack"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{variant.upper()} (threshold {m['threshold']:.2f})", fontsize=10)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def precision_recall(curves: dict[str, dict], title: str, path: Path) -> Path:
    """Precision against recall as the threshold moves, one line
    per variant (curves from metrics.precision_recall_curve)."""
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    for variant, c in curves.items():
        ax.plot(c["recall"], c["precision"], label=variant.upper(), **VARIANT_STYLE.get(variant, {}))
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def threshold_sweep(curves: dict[str, dict], threshold: float, title: str, path: Path, f1_label: str = "F1") -> Path:
    """Precision, recall and F1 against the decision threshold; the bundle's threshold is marked."""
    fig, ax = plt.subplots(figsize=(5.4, 3.8))
    colours = {"precision": "tab:green", "recall": "tab:red", "f1": "tab:purple"}
    for variant, c in curves.items():
        dash = VARIANT_STYLE.get(variant, {}).get("linestyle", "-")
        for key, colour in colours.items():
            ax.plot(
                c["threshold"],
                c[key],
                color=colour,
                linestyle=dash,
                label=f"{f1_label if key == 'f1' else key} {variant.upper()}",
            )
    ax.axvline(threshold, color="grey", linewidth=1)
    ax.text(threshold, 1.04, f"bundle threshold {threshold:.2f}", color="grey", fontsize=8, ha="center")
    ax.set_xlabel("threshold on P(crack)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.set_title(title, fontsize=10, pad=16)
    return _save(fig, path)


def _tint(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    out = rgb.astype(np.float32).copy()
    sel = mask.astype(bool)
    out[sel] = 0.35 * out[sel] + 0.65 * np.array(colour, np.float32)
    return out.astype(np.uint8)


def overlay_grid(
    images: np.ndarray,
    true_masks: np.ndarray,
    predictions: dict[str, np.ndarray],
    dice: dict[str, list[float]],
    title: str,
    path: Path,
    score_label: str = "Dice",
    score_format: str = ".2f",
) -> Path:
    """Rows of samples: image | true mask (green) | each variant's
    predicted mask (red), a per-image score (`score_label`, Dice by default) in the titles."""
    n = len(images)
    cols = 2 + len(predictions)
    fig, axes = plt.subplots(n, cols, figsize=(2.2 * cols, 2.3 * n), squeeze=False)
    for i in range(n):
        panels = [(images[i], "image"), (_tint(images[i], true_masks[i], (0, 200, 0)), "true mask")]
        for variant, preds in predictions.items():
            panels.append(
                (
                    _tint(images[i], preds[i], (230, 0, 0)),
                    f"{variant.upper()} {score_label} {dice[variant][i]:{score_format}}",
                )
            )
        for ax, (panel, label) in zip(axes[i], panels):
            ax.imshow(panel)
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path, palette=True)


def pareto(points: list[dict], budget_ms: float | None, quality_label: str, title: str, ax) -> None:
    """Quality against INT8 latency on `ax`; points on the front are filled and joined, the budget is a dashed line."""
    for p in points:
        on = p["on_front"]
        ax.scatter(
            p["latency_ms"],
            p["quality"],
            s=40 if on else 22,
            color="tab:red" if on else "tab:grey",
            zorder=3,
            marker="o" if on else "x",
        )
        ax.annotate(p["label"], (p["latency_ms"], p["quality"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    front = sorted((p for p in points if p["on_front"]), key=lambda p: p["latency_ms"])
    if front:
        ax.plot(
            [p["latency_ms"] for p in front],
            [p["quality"] for p in front],
            color="tab:red",
            linewidth=1,
            label="Pareto front",
        )
    chosen = [p for p in points if p.get("chosen")]
    for p in chosen:
        ax.scatter(
            p["latency_ms"],
            p["quality"],
            s=160,
            facecolors="none",
            edgecolors="black",
            linewidths=1.5,
            zorder=4,
            label="chosen",
        )
    if budget_ms is not None:
        ax.axvline(budget_ms, color="black", linestyle="--", linewidth=1, label=f"budget {budget_ms:g} ms")
    ax.set_xlabel("INT8 latency, median ms (1 thread)")
    ax.set_ylabel(quality_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)


def latency_bars(rows: list[dict], budget_ms: float | None, title: str, ax) -> None:
    """Median INT8 latency per configuration (bars) with p95 whiskers and the budget line."""
    labels = [r["label"] for r in rows]
    med = [r["latency_ms"] for r in rows]
    p95 = [r["p95_ms"] for r in rows]
    colours = ["tab:green" if budget_ms is None or m <= budget_ms else "tab:grey" for m in med]
    ax.bar(
        range(len(rows)), med, color=colours, yerr=[np.zeros(len(med)), np.maximum(0, np.subtract(p95, med))], capsize=2
    )
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
    if budget_ms is not None:
        ax.axhline(budget_ms, color="black", linestyle="--", linewidth=1, label=f"budget {budget_ms:g} ms")
        ax.legend(fontsize=7)
    ax.set_ylabel("INT8 median ms (1 thread)")
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title, fontsize=10)


def figure(ncols: int, width: float = 6.0, height: float = 4.2):
    """A figure with `ncols` axes side by side (for the sweep's combined plots)."""
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def save(fig, path: Path) -> Path:
    return _save(fig, path)
