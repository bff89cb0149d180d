"""Latency of a TFLite model as the device runs it: the edge runtime, one thread, one frame at a time.

Only the interpreter call is timed (the input is already at the model's size),
after a few warm-up runs. The machine's load average is recorded with the result,
so a number taken while other jobs were running can be recognised as such.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np

from edge.runtime import TFLiteModel


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p95_ms: float
    min_ms: float
    mean_ms: float
    runs: int
    threads: int
    runtime: str
    load_average: float  # 1-minute load average when the timing started

    def as_dict(self) -> dict:
        return asdict(self)


def measure_latency(model: TFLiteModel, runs: int = 100, warmup: int = 10, tensor: np.ndarray | None = None) -> Latency:
    """Time `runs` invocations of `model` on `tensor` (default: mid-grey input) after `warmup` untimed ones."""
    if runs < 1:
        raise ValueError(f"latency runs must be >= 1, got {runs}")
    if tensor is None:
        tensor = np.full(model.input.shape[1:], 128, dtype=model.input.dtype)
    for _ in range(warmup):
        model.run(tensor)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        model.run(tensor)
        times[i] = (time.perf_counter() - start) * 1000.0
    return Latency(float(np.median(times)), float(np.percentile(times, 95)), float(times.min()), float(times.mean()),
                   runs, model.threads, model.runtime, float(load))


def machine_description() -> dict:
    """What the latency numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "machine": platform.machine(), "system": platform.system(),
            "python": platform.python_version(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
