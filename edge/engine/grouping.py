"""What counts as one crack: how close pieces of the mask merge, and how short a piece is only a speck.

The segmenter often sees one crack as a row of fragments a few pixels apart, and flags specks of a pixel
or two; counted as they come, a single crack read "23 crack(s)" in events, Home Assistant and Sparkplug.
Both limits are fractions of the frame's diagonal, so one setting means the same at 320x240 and 1920x1080.
Declared with `edge.config_fields` (no numpy/OpenCV import): it is also the `model.cracks` config section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge.config_fields import option


@dataclass(frozen=True)
class CrackGrouping:
    merge_gap: float = option(
        0.02,
        "pieces of the mask closer than this (fraction of the frame diagonal: 0.02 = 8 px at 320x240) are one crack",
        min=0,
        max=0.5,
    )
    min_length: float = option(
        0.025,
        "cracks shorter than this (fraction of the frame diagonal: 0.025 = 10 px at 320x240) are specks, not counted",
        min=0,
        max=1,
    )

    def __post_init__(self) -> None:
        for name in ("merge_gap", "min_length"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:  # also refuses nan
                raise ValueError(f"cracks.{name}: expected a fraction of the frame diagonal from 0 to 1, got {value}")

    def in_frame_px(self, width: int, height: int) -> tuple[float, float]:
        """(merge gap, minimum length) in pixels of a frame `width` x `height`."""
        diagonal = math.hypot(width, height)
        return self.merge_gap * diagonal, self.min_length * diagonal
