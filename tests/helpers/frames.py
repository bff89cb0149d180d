"""Frames and media files on disk: folder-camera frames from a pattern (cracks, clear, corrupt), and damaged
files (a JPEG whose header lies about its size, a spoilt video) that the sources, the daemon and `crackd infer`
must refuse."""

from __future__ import annotations

from pathlib import Path


def write_frames(folder: Path, pattern: str, size=(64, 48), start: int = 0) -> list[Path]:
    """Image files named in replay order from a pattern: 'C' = a dark
    crack line, '.' = blank light surface, 'X' = corrupt file, and two frames the
    darkness classifier calls crack that hold no crack: 'G' = an even grey surface
    (dark enough for the classifier, too light for the segmenter: an empty mask),
    'S' = a 5 px dark speck (one component, about 5 px long)."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    paths = []
    for i, ch in enumerate(pattern):
        path = folder / f"f{start + i:06d}.png"
        if ch == "X":
            path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
        else:
            img = np.full((h, w, 3), 130 if ch == "G" else 215, np.uint8)
            if ch == "C":
                cv2.line(img, (4, 6 + i % 5), (w - 6, h - 8), (15, 15, 15), 3)
            elif ch == "S":
                cv2.rectangle(img, (w // 2, h // 2), (w // 2 + 4, h // 2 + 4), (15, 15, 15), -1)
            cv2.imwrite(str(path), img)
        paths.append(path)
    return paths


def huge_header_jpeg(width=12000, height=12000) -> bytes:
    """A real 16x16 JPEG whose frame header claims width x height: decoding it would allocate the claimed size."""
    import cv2
    import numpy as np

    _, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 200, np.uint8))
    data = bytearray(buf.tobytes())
    i = 2
    while data[i + 1] != 0xC0:  # walk the segments to the baseline frame header (SOF0)
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    data[i + 5 : i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def damaged_video(tmp_path: Path, how: str) -> Path:
    """A 30-frame MJPG .avi spoilt `how`: "truncated" (cut in
    half), "scribbled" (bytes overwritten), else random bytes."""
    import cv2
    import numpy as np

    path = tmp_path / f"{how}.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(30):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "scribbled":
        for offset in range(2000, len(data) - 1000, 50):
            data[offset : offset + 10] = b"\xff" * 10
    else:
        data = bytearray(np.random.default_rng(1).integers(0, 255, 20000, dtype=np.uint8).tobytes())
    path.write_bytes(bytes(data))
    return path
