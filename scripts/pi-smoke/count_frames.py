"""Guest side of the instruction count: one bundle, crack frames, frames without a crack, the reference.

Run under qemu-aarch64 with count_insns.so; each mark() makes the plugin print its running total,
so the instructions of N frames are the difference between two marks, without Python's start-up.
Usage: count_frames.py BUNDLE_DIR REFERENCE.tflite RUNTIME [N]
"""

import os
import sys

import numpy as np

from edge.engine.bundle import load_bundle
from edge.engine.cascade import Cascade
from edge.engine.reference_timing import ReferenceModel
from edge.sources.synth import generate


def mark(label: str) -> None:
    print(f"mark {label}", flush=True)
    try:
        os.sched_get_priority_max(4242)
    except OSError:
        pass


bundle_dir, reference, runtime = sys.argv[1:4]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 3
bundle = load_bundle(bundle_dir, runtime=runtime)
crack, clear = Cascade(bundle, segment="always"), Cascade(bundle, segment="never")
ref = ReferenceModel(reference, runtime=runtime, threads=1)
rng = np.random.default_rng(0)
frames = [generate(rng, 480, 640, crack_probability=1.0).image for _ in range(2)]
crack.process(frames[0]), clear.process(frames[0]), ref.time(1, warmup=1)  # warm-up
for name, step in (
    ("crack", lambda i: crack.process(frames[i % 2])),
    ("no-crack", lambda i: clear.process(frames[i % 2])),
    ("reference", lambda i: ref.model.invoke()),
):
    mark(f"{name}-start")
    for i in range(n):
        step(i)
    mark(f"{name}-end")
print(f"frames {n} runtime {bundle.classifier.runtime}", flush=True)
