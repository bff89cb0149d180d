"""Label Studio's brush masks: the run-length code of its `BrushLabels` results (`value.rle`).

Label Studio stores a brush mask as the RGBA pixels of the image (height x width x 4 bytes, row by row), packed
with the rle-pack code of thi.ng/umbrella, which its frontend and `label-studio-converter` (brush.py) share:

  header   32 bits  number of values (height * width * 4)
            5 bits  word size - 1 (8-bit words: 7)
           4 x 4 bits  the four run-length field sizes - 1 (3, 4, 8 and 16 bits: 2, 3, 7, 15)
  tokens    1 bit   1: a run of one repeated word, 0: a run of literal words
            2 bits  which of the four field sizes the count is stored in
            n bits  count - 1
            then one word (repeated run) or `count` words (literal run)
  padding  zero bits up to a whole byte

All bit fields are most significant bit first; the code is a list of byte values (0-255). A pixel is painted when
its alpha byte (every fourth value) is set; masks are written with all four bytes 0 or 255, as the converter's
`mask2rle` does, and read back with alpha >= 128 as crack (the browser's brush anti-aliases its edges).
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 8
RUN_FIELD_BITS = (3, 4, 8, 16)  # the sizes Label Studio and label-studio-converter write
HEADER_BITS = 32 + 5 + 4 * 4
# Alpha at or above this is painted: a pixel at least half covered by the brush.
ALPHA_PAINTED = 128


class BrushRleError(ValueError):
    """A brush RLE that cannot be decoded (truncated, or not Label Studio's code); the message says what is wrong."""


def _bits(value: int, width: int) -> str:
    return format(value, f"0{width}b")


def encode(values: np.ndarray) -> list[int]:
    """The Label Studio RLE code of a flat array of bytes (0-255)."""
    flat = np.asarray(values, dtype=np.uint8).ravel()
    out = [_bits(flat.size, 32), _bits(WORD_BITS - 1, 5), *(_bits(n - 1, 4) for n in RUN_FIELD_BITS)]
    if flat.size:
        # Runs of equal values: where each run starts, how long it is, its value.
        starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
        lengths = np.diff(np.append(starts, flat.size))
        longest = 1 << RUN_FIELD_BITS[-1]
        for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
            word = _bits(int(flat[start]), WORD_BITS)
            if length == 1:  # a single value: a literal run of one word
                out.append("0" + "00" + _bits(0, RUN_FIELD_BITS[0]) + word)
                continue
            while length > 0:
                count = min(length, longest)
                field = next(i for i, n in enumerate(RUN_FIELD_BITS) if count <= 1 << n)
                out.append("1" + _bits(field, 2) + _bits(count - 1, RUN_FIELD_BITS[field]) + word)
                length -= count
    bits = "".join(out)
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


def decode(code: list[int] | bytes) -> np.ndarray:
    """The flat byte array a Label Studio RLE code stands for; BrushRleError when it cannot be decoded."""
    try:
        data = bytes(code)
    except (TypeError, ValueError):
        raise BrushRleError("expected a list of byte values (0-255)") from None
    bits = "".join(format(b, "08b") for b in data)
    if len(bits) < HEADER_BITS:
        raise BrushRleError(f"{len(data)} bytes: shorter than the {HEADER_BITS}-bit header")
    pos = 0

    def read(width: int) -> int:
        nonlocal pos
        if pos + width > len(bits):
            raise BrushRleError(f"truncated: the code ends inside a field at bit {pos}")
        value = int(bits[pos : pos + width], 2) if width else 0
        pos += width
        return value

    total = read(32)
    word_bits = read(5) + 1
    fields = [read(4) + 1 for _ in range(4)]
    if word_bits > 8:
        raise BrushRleError(f"word size {word_bits} bits: brush masks use bytes (8 bits)")
    out = np.zeros(total, np.uint8)
    i = 0
    while i < total:
        repeated = read(1)
        count = read(fields[read(2)]) + 1
        if i + count > total:
            raise BrushRleError(f"a run of {count} at value {i} passes the announced {total} values")
        if repeated:
            out[i : i + count] = read(word_bits)
        else:
            out[i : i + count] = [read(word_bits) for _ in range(count)]
        i += count
    return out


def mask_to_rle(mask01: np.ndarray) -> list[int]:
    """A 0/1 (or 0/255) height x width mask as a Label Studio brush RLE (all four RGBA bytes 0 or 255)."""
    painted = np.where(np.asarray(mask01) > 0, 255, 0).astype(np.uint8)
    return encode(np.repeat(painted.ravel(), 4))


def rle_to_mask(code: list[int], height: int, width: int) -> np.ndarray:
    """The 0/1 mask of a brush RLE over a height x width image (alpha >= ALPHA_PAINTED is painted)."""
    values = decode(code)
    if values.size != height * width * 4:
        raise BrushRleError(
            f"{values.size} values, but a {width}x{height} image has {height * width * 4} (RGBA): "
            "the mask was drawn on an image of another size"
        )
    return (values.reshape(height, width, 4)[:, :, 3] >= ALPHA_PAINTED).astype(np.uint8)
