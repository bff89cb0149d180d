"""Image files: which suffixes count as images, how folders are listed and files decoded (to RGB).

One definition for the folder camera, `crackd infer`, the bundle self-test and the trainer's loaders.

Decoding is bounded: the dimensions are read from the file's header (PNG, JPEG, BMP, WebP, TIFF)
before any pixel is decoded, and an image over `max_pixels` is refused with `ImageTooLarge`, so a
12000x12000 JPEG costs a few bytes of header instead of 430 MB of pixels on a 1 GB Pi.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
# Default decoding limit: 40 megapixels (a 64 MP sensor's frames need a higher setting); 120 MB as RGB.
DEFAULT_MAX_PIXELS = 40_000_000


class ImageTooLarge(ValueError):
    """The header announces more pixels than allowed; nothing was decoded."""


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in `folder` (and below it when `recursive`), sorted by path."""
    found = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _jpeg_size(b: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = struct.unpack(">H", b[i + 2 : i + 4])[0]
        # SOF0..SOF15 carry the frame size, except DHT (C4), JPG (C8) and DAC (CC).
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", b[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


def _tiff_size(b: bytes) -> tuple[int, int] | None:
    endian = "<" if b[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(endian + "I", b[4:8])
        (count,) = struct.unpack(endian + "H", b[ifd : ifd + 2])
        size = {}
        for k in range(count):
            entry = b[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
            tag, kind = struct.unpack(endian + "HH", entry[:4])
            if tag in (256, 257):  # ImageWidth, ImageLength (SHORT or LONG)
                size[tag] = struct.unpack(
                    endian + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12]
                )[0]
        return (size[256], size[257]) if len(size) == 2 else None
    except (struct.error, KeyError):
        return None


def header_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header, or None for a format or header not understood."""
    b = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    try:
        if b[:8] == b"\x89PNG\r\n\x1a\n" and b[12:16] == b"IHDR":
            return struct.unpack(">II", b[16:24])
        if b[:2] == b"\xff\xd8":
            return _jpeg_size(b)
        if b[:2] == b"BM":
            w, h = struct.unpack("<ii", b[18:26])
            return abs(w), abs(h)
        if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
            kind = b[12:16]
            if kind == b"VP8X":
                return 1 + int.from_bytes(b[24:27], "little"), 1 + int.from_bytes(b[27:30], "little")
            if kind == b"VP8 ":
                w, h = struct.unpack("<HH", b[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if kind == b"VP8L":
                bits = int.from_bytes(b[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if b[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(b)
    except struct.error:
        return None
    return None


def check_size(data: bytes | np.ndarray, max_pixels: int | None, name: str = "image") -> None:
    """Raise ImageTooLarge when the header announces more than `max_pixels` (None: no limit)."""
    if not max_pixels:
        return
    size = header_size(data[: 1 << 20] if len(data) > 1 << 20 and not _is_tiff(data) else data)
    if size is not None and size[0] * size[1] > max_pixels:
        w, h = size
        raise ImageTooLarge(
            f"{name}: {w}x{h} pixels ({w * h / 1e6:.1f} MP) is over the limit of "
            f"{max_pixels / 1e6:g} MP; not decoded (raise the limit to accept it)"
        )


def _is_tiff(data) -> bool:
    head = bytes(data[:4])
    return head in (b"II*\x00", b"MM\x00*")  # the first IFD may be anywhere in the file


def decode_rgb(
    data: np.ndarray | None, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str = "image"
) -> np.ndarray | None:
    """Decode encoded image bytes (uint8 array) to RGB uint8, or None when empty or corrupt.

    Raises ImageTooLarge (before decoding anything) when the header announces more than `max_pixels`.
    """
    if data is None or data.size == 0:
        return None
    check_size(data, max_pixels, name)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_rgb(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray | None:
    """Decode an image file to RGB uint8, or None when it is
    missing, empty or corrupt (ImageTooLarge: see decode_rgb)."""
    path = Path(path)
    return decode_rgb(np.fromfile(str(path), dtype=np.uint8), max_pixels, str(path)) if path.is_file() else None
