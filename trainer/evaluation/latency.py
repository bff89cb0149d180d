"""Latency of a TFLite model as the device runs it: the edge runtime, one thread, one frame at a time.

Only the interpreter call is timed (the input is already at the model's size),
after a few warm-up runs. The machine's load average is recorded with the result,
so a number taken while other jobs were running can be recognised as such.

On a shared machine other jobs steal the core mid-run and inflate the median
(seen here: a 3.0 ms model timed at 7.1 ms median beside training jobs and test
suites; `nice` did not help, as the scheduler shares the CPU between sessions
first). `priority="realtime"` runs the timing thread under SCHED_FIFO (lowest
real-time priority) for the second or so one measurement takes, which gives the
number an otherwise idle device core would (3.0 ms, p95 3.1 ms, in the same
conditions). It needs root or CAP_SYS_NICE and falls back to normal priority,
recorded in the result, when not permitted. The kernel's real-time throttling
and the other cores keep the rest of the machine running meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np

from edge.engine.runtime import TFLiteModel

log = logging.getLogger("crack-train.latency")


@dataclass(frozen=True)
class ModelLatency:
    """Interpreter time of one TFLite model, one input at a time, with the conditions it was measured in."""

    median_ms: float
    p95_ms: float
    min_ms: float
    mean_ms: float
    runs: int
    threads: int
    runtime: str
    load_average: float  # 1-minute load average when the timing started
    priority: str = "normal"  # scheduling of the timing thread: "realtime" (SCHED_FIFO) or "normal"
    rounds: int = 1  # independent timing rounds; the one with the lowest median is kept

    def as_dict(self) -> dict:
        return asdict(self)


PRIORITIES = ("realtime", "normal")


@contextlib.contextmanager
def thread_priority(priority: str = "normal"):
    """Run the block with the calling thread's scheduling set to `priority`; yields the priority actually in effect."""
    if priority not in PRIORITIES:
        raise ValueError(f"timing priority {priority!r}: expected one of {', '.join(PRIORITIES)}")
    if priority == "normal" or not hasattr(os, "sched_setscheduler"):
        yield "normal"
        return
    old_policy, old_param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # pid 0: this thread only (Linux)
    except OSError as exc:
        log.warning(
            "cannot time at real-time priority (%s); timing at normal priority, other jobs may inflate the numbers", exc
        )
        yield "normal"
        return
    try:
        yield "realtime"
    finally:
        os.sched_setscheduler(0, old_policy, old_param)


def measure_model_latency(
    model: TFLiteModel, runs: int = 100, warmup: int = 10, tensor: np.ndarray | None = None, priority: str = "normal"
) -> ModelLatency:
    """Time `runs` invocations of `model` on `tensor` (default: mid-grey input) after `warmup` untimed ones."""
    if runs < 1:
        raise ValueError(f"latency runs must be >= 1, got {runs}")
    if tensor is None:
        tensor = np.full(model.input.shape[1:], 128, dtype=model.input.dtype)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    times = np.empty(runs)
    with thread_priority(priority) as applied:
        for _ in range(warmup):
            model.run(tensor)
        for i in range(runs):
            start = time.perf_counter()
            model.run(tensor)
            times[i] = (time.perf_counter() - start) * 1000.0
    return ModelLatency(
        float(np.median(times)),
        float(np.percentile(times, 95)),
        float(times.min()),
        float(times.mean()),
        runs,
        model.threads,
        model.runtime,
        float(load),
        applied,
    )


def machine_description() -> dict:
    """What the latency numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def measure_models(
    models: dict[str, TFLiteModel],
    runs: int = 100,
    warmup: int = 10,
    priority: str = "normal",
    rounds: int = 3,
    progress=None,
) -> dict[str, ModelLatency]:
    """Time several models in interleaved rounds and keep, per model, the round with the lowest median.

    A burst of load from another job then spoils one round of one model, not the result.
    """
    best: dict[str, ModelLatency] = {}
    schedule = [(r, name) for r in range(rounds) for name in models]
    for _, name in schedule if progress is None else progress(schedule, desc="timing"):
        lat = measure_model_latency(models[name], runs, warmup, priority=priority)
        if name not in best or lat.median_ms < best[name].median_ms:
            best[name] = lat
    return {name: ModelLatency(**{**asdict(lat), "rounds": rounds}) for name, lat in best.items()}


def load_note(latencies: list[dict]) -> str:
    """A sentence for reports when other jobs were running during timing ("" on a quiet machine)."""
    loads = [lat.get("load_average") or 0.0 for lat in latencies]
    if not loads or max(loads) <= 1.0:
        return ""
    busy = f"The machine's load average was up to {max(loads):.1f} while timing (other jobs were running)"
    if {lat.get("priority", "normal") for lat in latencies} == {"realtime"}:
        return (
            busy
            + "; the timing thread ran at real-time priority (SCHED_FIFO) so that they did not inflate the numbers."
        )
    return (
        busy + " and timing ran at normal priority, so the numbers may be inflated;"
        " an idle machine gives equal or lower numbers."
    )
