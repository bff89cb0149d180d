"""What counts as one crack: how close pieces of the mask merge, and how short a piece is only a speck.

The segmenter often sees one crack as a row of fragments a few pixels apart, and flags specks of a pixel
or two; counted as they come, a single crack read "23 crack(s)" in events, Home Assistant and Sparkplug.
Both limits are fractions of the frame's diagonal, so one setting means the same at 320x240 and 1920x1080;
the minimum length may instead be set in frame pixels, or in millimetres where the camera's scale is known.
It is also what a frame needs to count as a crack at all (edge.engine.verdict): a crack shorter than it is none.
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

    min_length_px: float | None = option(
        None, "the minimum length in frame pixels instead (null = min_length)", min=0, max=100000
    )
    min_length_mm: float | None = option(
        None, "the minimum length in millimetres instead (needs model.mm_per_pixel; null = min_length)", min=0
    )

    def __post_init__(self) -> None:
        for name in ("merge_gap", "min_length"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:  # also refuses nan
                raise ValueError(f"cracks.{name}: expected a fraction of the frame diagonal from 0 to 1, got {value}")

    def unit_problem(self, mm_per_pixel: float | None) -> tuple[str, str] | None:
        """(key, what is wrong) when the minimum length's unit cannot be used with this camera scale, else None."""
        if self.min_length_px is not None and self.min_length_mm is not None:
            return "min_length_mm", "set the minimum length in pixels or in millimetres, not both"
        if self.min_length_mm is not None and not mm_per_pixel:
            return (
                "min_length_mm",
                "a length in millimetres needs the camera's scale: set model.mm_per_pixel (infer: --mm-per-pixel)",
            )
        return None

    def check_units(self, mm_per_pixel: float | None) -> None:
        """Raise ValueError naming the key when the minimum length's unit cannot be used (see `unit_problem`)."""
        problem = self.unit_problem(mm_per_pixel)
        if problem:
            raise ValueError(f"cracks.{problem[0]}: {problem[1]}")

    def in_frame_px(self, width: int, height: int, mm_per_pixel: float | None = None) -> tuple[float, float]:
        """(merge gap, minimum length) in pixels of a frame `width` x `height` (`mm_per_pixel`: the camera's scale)."""
        self.check_units(mm_per_pixel)
        diagonal = math.hypot(width, height)
        if self.min_length_mm is not None and mm_per_pixel:
            min_length = self.min_length_mm / mm_per_pixel
        elif self.min_length_px is not None:
            min_length = self.min_length_px
        else:
            min_length = self.min_length * diagonal
        return self.merge_gap * diagonal, min_length
