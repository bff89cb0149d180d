"""CVAT's "Segmentation mask 1.1" zip, written as a task to correct and read back once corrected.

The layout CVAT exports and imports (its Pascal VOC segmentation variant, read and written by Datumaro):

    labelmap.txt                      `# label:color_rgb:parts:actions`, then `name:r,g,b::` per label
    ImageSets/Segmentation/NAME.txt   the frames, one image name without extension per line (CVAT writes default.txt)
    SegmentationClass/ID.png          each label painted in its labelmap colour (RGB; a 1-channel PNG holds the
                                      label's line index instead); a frame with nothing drawn has no PNG
    SegmentationObject/ID.png         each object (instance) painted in the Pascal VOC palette colour of its index
    JPEGImages/ID.*                   the images, when exported with "Save images" (and in our task zip)

CVAT takes the label colours of an export from the task's labels, so a read never assumes a colour: it looks the
label up by name in labelmap.txt.
"""

from __future__ import annotations

import zipfile
from collections.abc import Container
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from trainer.labelling.site import LabelFileError, LabelledFrame, SiteFrame

LABELMAP = "labelmap.txt"
SUBSETS = "ImageSets/Segmentation"
CLASS_DIR = "SegmentationClass"
OBJECT_DIR = "SegmentationObject"
IMAGES_DIR = "JPEGImages"
BACKGROUND = (0, 0, 0)
CRACK_COLOUR = (255, 0, 0)  # any colour would do: CVAT maps colours to labels through labelmap.txt
MAX_INSTANCES = 254  # palette index 255 is Pascal VOC's "void" colour


def voc_colour(index: int) -> tuple[int, int, int]:
    """The Pascal VOC palette colour of `index` (RGB): its bits spread over the high bits of the three channels."""
    r = g = b = 0
    for shift in range(7, -1, -1):
        r |= (index & 1) << shift
        g |= ((index >> 1) & 1) << shift
        b |= ((index >> 2) & 1) << shift
        index >>= 3
    return r, g, b


def _png_rgb(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image as PNG
        raise ValueError("could not encode a PNG")
    return data.tobytes()


def _painted(index: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> bytes:
    """An index image (0 = background) as an RGB PNG in the given colours."""
    palette = np.zeros((256, 3), np.uint8)
    for i, colour in colours.items():
        palette[i] = colour
    return _png_rgb(palette[index])


def _instances(mask01: np.ndarray) -> np.ndarray:
    """One object per connected crack (8-connected), numbered from 1; beyond MAX_INSTANCES they share the last."""
    _, labels = cv2.connectedComponents(mask01.astype(np.uint8), connectivity=8)
    return np.minimum(labels, MAX_INSTANCES).astype(np.uint8)


def labelmap_text(label: str) -> str:
    return f"# label:color_rgb:parts:actions\nbackground:0,0,0::\n{label}:{','.join(map(str, CRACK_COLOUR))}::\n"


def write_task(frames: list[SiteFrame], out: Path, label: str = "crack", with_images: bool = True) -> int:
    """Write the frames and their pre-annotations as a Segmentation mask 1.1 zip; returns how many frames carry
    a pre-annotation."""
    drawn = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(LABELMAP, labelmap_text(label))
        archive.writestr(f"{SUBSETS}/default.txt", "".join(f"{f.stem}\n" for f in frames))
        for frame in frames:
            if with_images:
                archive.write(frame.image, f"{IMAGES_DIR}/{frame.image.name}")
            if not frame.drawn or frame.preannotation is None:
                continue  # as CVAT exports a frame with nothing drawn: listed, without a PNG
            drawn += 1
            mask = (frame.preannotation > 0).astype(np.uint8)
            archive.writestr(f"{CLASS_DIR}/{frame.stem}.png", _painted(mask, {1: CRACK_COLOUR}))
            instances = _instances(mask)
            colours = {i: voc_colour(i) for i in range(1, int(instances.max()) + 1)}
            archive.writestr(f"{OBJECT_DIR}/{frame.stem}.png", _painted(instances, colours))
    return drawn


# ------------------------------------------------------------------------------------------------- reading back


def parse_labelmap(text: str, where: str) -> list[tuple[str, tuple[int, int, int] | None]]:
    """[(label, colour or None)] in file order; LabelFileError naming a line not `name:r,g,b:parts:actions`."""
    labels = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) != 4:
            raise LabelFileError(f"{where}:{number}: {line!r}: expected name:r,g,b:parts:actions (4 fields)")
        colour = None
        if fields[1]:
            try:
                parts = [int(c) for c in fields[1].split(",")]
            except ValueError:
                parts = []
            if len(parts) != 3 or not all(0 <= c <= 255 for c in parts):
                raise LabelFileError(f"{where}:{number}: colour {fields[1]!r}: expected r,g,b (0-255 each)")
            colour = (parts[0], parts[1], parts[2])
        labels.append((fields[0], colour))
    return labels


def _root(names: list[str], source: Path) -> str:
    """The folder of the archive that holds the dataset ('' at the top, as CVAT writes it)."""
    roots = {
        str(PurePosixPath(n).parent.parent.parent)
        for n in names
        if PurePosixPath(n).parent.as_posix().endswith(SUBSETS) and n.endswith(".txt")
    }
    if not roots:
        raise LabelFileError(
            f"{source}: no {SUBSETS}/*.txt inside: not a CVAT 'Segmentation mask 1.1' export "
            "(in CVAT: Actions > Export task dataset > Segmentation mask 1.1)"
        )
    if len(roots) > 1:
        raise LabelFileError(f"{source}: more than one dataset inside ({', '.join(sorted(roots))})")
    root = roots.pop()
    return "" if root == "." else root + "/"


def _class_mask(data: bytes, labels: list, index: int, where: str) -> np.ndarray:
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise LabelFileError(f"{where}: not a PNG image, or corrupt")
    if raw.ndim == 2:  # a 1-channel mask holds label indices (the labelmap's line order), as CVAT documents
        if int(raw.max()) >= len(labels):
            raise LabelFileError(f"{where}: label index {int(raw.max())}, but labelmap.txt has {len(labels)} labels")
        return (raw == index).astype(np.uint8)
    rgb = cv2.cvtColor(raw[:, :, :3], cv2.COLOR_BGR2RGB)
    known = np.zeros(rgb.shape[:2], bool)
    for _, colour in labels:
        if colour is not None:
            known |= np.all(rgb == colour, axis=2)
    if not known.all():
        y, x = np.argwhere(~known)[0]
        raise LabelFileError(
            f"{where}: pixel ({x}, {y}) has colour {tuple(int(c) for c in rgb[y, x])}, which labelmap.txt does not "
            "name (masks must be lossless PNG painted in the labelmap's colours)"
        )
    colour = labels[index][1]
    return np.all(rgb == colour, axis=2).astype(np.uint8)


def read_export(path: Path, label: str = "crack", have_images: Container[str] = ()) -> list[LabelledFrame]:
    """The frames of a CVAT Segmentation mask 1.1 export: every frame listed in ImageSets/Segmentation, with the
    pixels of `label` (a frame without a SegmentationClass PNG has nothing drawn: crack-free). The images the
    export carries are read for the stems not in `have_images` only."""
    if not path.is_file():
        raise LabelFileError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise LabelFileError(f"{path}: not a zip archive (expected CVAT's 'Segmentation mask 1.1' export)")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        root = _root(names, path)
        if root + LABELMAP not in names:
            raise LabelFileError(f"{path}: no {root}{LABELMAP} inside (CVAT writes it with every export)")
        labelmap = parse_labelmap(archive.read(root + LABELMAP).decode("utf-8", "replace"), f"{path}:{LABELMAP}")
        wanted = [i for i, (name, _) in enumerate(labelmap) if name.lower() == label.lower()]
        if not wanted:
            raise LabelFileError(
                f"{path}: {LABELMAP} has no label {label!r} (labels: {', '.join(n for n, _ in labelmap)}); "
                "name the CVAT label for cracks crack, or pass --label NAME"
            )
        index = wanted[0]
        if labelmap[index][1] is None:
            raise LabelFileError(f"{path}: {LABELMAP} gives label {label!r} no colour")
        images = {
            PurePosixPath(n[len(root + IMAGES_DIR) + 1 :]).with_suffix("").as_posix(): n
            for n in names
            if n.startswith(f"{root}{IMAGES_DIR}/") and not n.endswith("/")
        }
        frames: dict[str, LabelledFrame] = {}
        for subset in sorted(n for n in names if n.startswith(f"{root}{SUBSETS}/") and n.endswith(".txt")):
            for item in archive.read(subset).decode("utf-8", "replace").splitlines():
                item = item.strip()
                if not item or item.startswith("#"):
                    continue
                stem = PurePosixPath(item).name
                if stem in frames:
                    continue
                png = f"{root}{CLASS_DIR}/{item}.png"
                mask = None
                if png in names:
                    mask = _class_mask(archive.read(png), labelmap, index, f"{path}:{png}")
                    mask = mask if mask.any() else None
                image_name = images.get(item) if stem not in have_images else None
                frames[stem] = LabelledFrame(
                    stem,
                    mask,
                    image_bytes=archive.read(image_name) if image_name else None,
                    image_name=PurePosixPath(image_name).name if image_name else None,
                )
    if not frames:
        raise LabelFileError(f"{path}: the export lists no frames")
    return list(frames.values())
