"""When a frame is a crack: the classifier's gate passed, and the segmenter, if it looked, measured a crack.

The classifier sees the whole frame at its small input size, where a thin crack is under a pixel; alone it
called crack-free walls "crack" with nothing drawn. So it is a high-recall gate that decides when the
segmenter runs, and the segmenter confirms: a frame counts only when it measures at least one crack of the
minimum length (`model.cracks`; shorter pieces are specks). With the segmenter off (`segment: never`) the
gate's score alone decides. One rule, shared by a frame's `crack` flag (edge.engine.cascade) and the
debounce (edge.events.decision), so the two never disagree.
"""

from __future__ import annotations


def counts_as_crack(score: float, threshold: float, confirmed: bool | None) -> bool:
    """`confirmed`: whether the segmenter measured a crack, None when it did not run on the frame."""
    return score >= threshold and confirmed is not False
