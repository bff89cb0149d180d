"""Time a reference model in this process, so a frame's cost can be stated as a multiple of it.

Milliseconds do not carry from one machine to another; a ratio to a well-known
model timed in the same process, with the same runtime and threads, mostly does,
and published figures for that model (INT8 MobileNetV2 1.0 at 224x224, made by
`crack-train reference-model`) convert it to a given device. `crackd bench`
times the reference before and after its frame loop, so a change of machine
load during the run shows as a difference between the two.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.engine.runtime import TFLiteModel


class ReferenceError(ValueError):
    """The reference model cannot be loaded or run; the message names the file."""


@dataclass(frozen=True)
class ReferenceTiming:
    """Interpreter-call times of the reference model, in milliseconds, in the order they were taken."""

    times_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return float(np.median(self.times_ms))

    def as_dict(self) -> dict:
        return {"median_ms": self.median_ms, "min_ms": float(min(self.times_ms)), "runs": len(self.times_ms)}


class ReferenceModel:
    """A reference TFLite model loaded once, fed one fixed input, timed on demand."""

    def __init__(self, path: str | Path, runtime: str, threads: int, seed: int = 0):
        path = Path(path)
        if not path.is_file():
            raise ReferenceError(f"{path}: no such reference model file")
        try:
            self.model = TFLiteModel(path, runtime=runtime, threads=threads)
        except (ValueError, RuntimeError) as exc:
            raise ReferenceError(f"{path}: not a loadable TFLite model ({exc})") from None
        self.path = path
        info = self.model.input
        rng = np.random.default_rng(seed)
        shape = info.shape[1:]
        if np.issubdtype(info.dtype, np.integer):
            limits = np.iinfo(info.dtype)
            self._input = rng.integers(limits.min, limits.max, size=shape, endpoint=True).astype(info.dtype)
        else:
            self._input = rng.uniform(-1.0, 1.0, size=shape).astype(info.dtype)

    @property
    def input_shape(self) -> list[int]:
        return list(self.model.input.shape)

    def time(self, runs: int, warmup: int = 3) -> ReferenceTiming:
        """`runs` timed interpreter calls after `warmup` untimed ones (input copied in once)."""
        view = self.model.input_view()
        np.copyto(view, self._input, casting="no")
        del view
        for _ in range(warmup):
            self.model.invoke()
        times = []
        for _ in range(max(1, runs)):
            t0 = time.perf_counter()
            self.model.invoke()
            times.append((time.perf_counter() - t0) * 1000.0)
        return ReferenceTiming(tuple(times))


def relative_to(reference_ms: float, medians_ms: dict[str, float]) -> dict[str, float]:
    """Each median as a multiple of the reference median."""
    return {name: value / reference_ms for name, value in medians_ms.items()}
