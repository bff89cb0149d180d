"""Quality metrics shared by export validation, evaluation and the sweep (numpy only)."""

from __future__ import annotations

import numpy as np


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, F1 and ROC-AUC of scores against 0/1 labels."""
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    p = s >= threshold
    tp, fp = int(np.sum(p & y)), int(np.sum(p & ~y))
    fn, tn = int(np.sum(~p & y)), int(np.sum(~p & ~y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    # The mean recall of the classes present (a set of cracks only has no specificity to average in).
    class_recalls = [v for v, n in ((recall, tp + fn), (tn / (tn + fp) if tn + fp else 0.0, tn + fp)) if n]
    return {
        "accuracy": (tp + tn) / max(1, len(y)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "balanced_accuracy": float(np.mean(class_recalls)) if class_recalls else 0.0,
        "roc_auc": roc_auc(y, s),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "threshold": threshold,
    }


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank statistic (ties get half credit); nan with one class only."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pixel_metrics(true_masks: np.ndarray, pred_masks: np.ndarray) -> dict:
    """Pixel precision, recall, F1 (= Dice) and IoU pooled over all images."""
    t = np.asarray(true_masks).astype(bool)
    p = np.asarray(pred_masks).astype(bool)
    tp = int(np.sum(t & p))
    fp = int(np.sum(~t & p))
    fn = int(np.sum(t & ~p))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    dice = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    iou = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    return {"precision": precision, "recall": recall, "dice": dice, "f1": dice, "iou": iou}


def tolerant_counts(true_mask: np.ndarray, pred_mask: np.ndarray, tolerance: int = 2) -> tuple[int, int, int, int]:
    """(predicted pixels near a true one, predicted pixels, true pixels near a predicted one, true pixels) of one image.

    "Near" is within `tolerance` pixels (a disc), the crack literature's tolerant matching: an outline
    one or two pixels off the hand-drawn one is not an error.
    """
    import cv2

    t = np.asarray(true_mask).astype(np.uint8)
    p = np.asarray(pred_mask).astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    near_true = cv2.dilate(t, k) > 0
    near_pred = cv2.dilate(p, k) > 0
    pb, tb = p > 0, t > 0
    return int((pb & near_true).sum()), int(pb.sum()), int((tb & near_pred).sum()), int(tb.sum())


def tolerant_from_counts(counts: np.ndarray) -> dict:
    """Pooled tolerant precision / recall / F1 from summed `tolerant_counts`."""
    tp_p, n_p, tp_t, n_t = (int(v) for v in np.asarray(counts).reshape(-1, 4).sum(axis=0))
    precision = tp_p / n_p if n_p else (1.0 if not n_t else 0.0)
    recall = tp_t / n_t if n_t else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tolerant_precision": precision, "tolerant_recall": recall, "tolerant_f1": f1}


def tolerant_metrics(true_masks: np.ndarray, pred_masks: np.ndarray, tolerance: int = 2) -> dict:
    """Tolerant precision, recall and F1 pooled over images (masks N x H x W)."""
    counts = [tolerant_counts(t, p, tolerance) for t, p in zip(np.asarray(true_masks), np.asarray(pred_masks))]
    return tolerant_from_counts(np.array(counts, np.int64).reshape(-1, 4))


def precision_recall_curve(labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | None = None) -> dict:
    thresholds = np.linspace(0.0, 1.0, 101) if thresholds is None else thresholds
    rows = [binary_metrics(labels, scores, float(t)) for t in thresholds]
    return {
        "threshold": thresholds.tolist(),
        "precision": [r["precision"] for r in rows],
        "recall": [r["recall"] for r in rows],
        "f1": [r["f1"] for r in rows],
    }


def role_quality(role: str, targets: np.ndarray, outputs: np.ndarray) -> tuple[str, dict]:
    """(headline metric name, metrics) of a model's float outputs: F1 of a classifier, Dice of a segmenter."""
    if role == "classifier":
        return "f1", binary_metrics(np.asarray(targets).reshape(-1), outputs.reshape(len(outputs), -1)[:, 0])
    targets = np.asarray(targets).astype(bool)
    preds = outputs[..., 0] >= 0.5
    return "dice", {**pixel_metrics(targets, preds), **tolerant_metrics(targets, preds)}
