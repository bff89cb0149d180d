"""Strict JSON for reports: numpy values become Python ones
and NaN/inf become null (e.g. ROC-AUC of a one-class set)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def json_safe(value):
    """A copy of `value` that `json.dumps(..., allow_nan=False)` accepts."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(value) -> str:
    return json.dumps(json_safe(value), indent=1, allow_nan=False)
