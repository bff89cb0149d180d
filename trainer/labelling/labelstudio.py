"""Label Studio: a tasks JSON with crackd's masks as brush pre-annotations, and its JSON export read back.

A task is `{"data": {"image": URL}, "predictions": [{"model_version": ..., "result": [REGION]}]}` where a brush
REGION is `{"type": "brushlabels", "from_name": "label", "to_name": "image", "original_width": W,
"original_height": H, "value": {"format": "rle", "rle": [...], "brushlabels": ["crack"]}}` (Label Studio's "Import
pre-annotated data" and BrushLabels pages). The JSON export (Export > JSON) is the list of tasks, each with its
`annotations`: the same regions under `result`, plus `was_cancelled` for a skipped task.

Images are referenced, not copied: `/data/local-files/?d=PATH` with PATH relative to Label Studio's
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (its local-files serving), or any URL prefix that serves SITE/images/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Container
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

import numpy as np

from trainer.labelling.brush_rle import BrushRleError, mask_to_rle, rle_to_mask
from trainer.labelling.site import LabelFileError, LabelledFrame, SiteFrame

FROM_NAME = "label"  # the BrushLabels tag's name in the labelling config
TO_NAME = "image"  # the Image tag's name
STEM_KEY = "crackd_stem"  # kept in each task's data, so the export names the frame whatever the image URL
LOCAL_FILES = "/data/local-files/?d="
# Label Studio prefixes an uploaded file's name with 8 hex digits and a dash (upload/1/0a1b2c3d-frame.jpg).
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


def labelling_config(label: str = "crack") -> str:
    """The labelling interface (Settings > Labeling Interface > Code): the image and one brush label."""
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true" zoomControl="true"/>\n'
        f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n'
        f'    <Label value="{label}" background="#ff0000"/>\n'
        "  </BrushLabels>\n"
        "</View>\n"
    )


def local_files_url(image: Path, document_root: Path) -> str:
    """The URL Label Studio serves `image` under, given its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT."""
    try:
        relative = image.resolve().relative_to(document_root.resolve())
    except ValueError:
        raise ValueError(
            f"--document-root {document_root}: {image} is not inside it (Label Studio serves local files from "
            "below its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT only)"
        ) from None
    return LOCAL_FILES + quote(relative.as_posix())


def brush_region(mask01: np.ndarray, label: str, region_id: str) -> dict[str, Any]:
    height, width = mask01.shape
    return {
        "id": region_id,
        "type": "brushlabels",
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": mask_to_rle(mask01), "brushlabels": [label]},
    }


def tasks(frames: list[SiteFrame], urls: dict[str, str], label: str = "crack") -> list[dict[str, Any]]:
    """One task per frame; a frame with a pre-annotation carries it as a prediction (crackd's, or the site's label)."""
    out = []
    for frame in frames:
        task: dict[str, Any] = {"data": {TO_NAME: urls[frame.stem], STEM_KEY: frame.stem}}
        if frame.drawn and frame.preannotation is not None:
            version = "crackd" if frame.source == "predicted" else "site label"
            region = brush_region(frame.preannotation, label, f"{frame.stem[:40]}-crack")
            task["predictions"] = [{"model_version": version, "result": [region]}]
        out.append(task)
    return out


def write_tasks(frames: list[SiteFrame], urls: dict[str, str], out: Path, label: str = "crack") -> int:
    """Write the tasks JSON to `out` and the labelling config beside it (OUT.xml); returns the pre-annotated count."""
    out.parent.mkdir(parents=True, exist_ok=True)
    task_list = tasks(frames, urls, label)
    out.write_text(json.dumps(task_list, separators=(",", ":")) + "\n", encoding="utf-8")
    out.with_suffix(".xml").write_text(labelling_config(label), encoding="utf-8")
    return sum("predictions" in t for t in task_list)


# ------------------------------------------------------------------------------------------------- reading back


def stem_of(task: dict[str, Any], known: Container[str]) -> str | None:
    """The frame a task is about: the stem kept in its data, else the file name in its image URL."""
    data = task.get("data")
    if not isinstance(data, dict):
        return None
    if isinstance(data.get(STEM_KEY), str):
        return data[STEM_KEY]
    url = data.get(TO_NAME)
    if not isinstance(url, str):
        return None
    parsed = urlparse(url)
    path = parse_qs(parsed.query).get("d", [None])[0] or unquote(parsed.path)
    stem = PurePosixPath(path).stem
    bare = UPLOAD_PREFIX.sub("", stem)
    return bare if stem not in known and bare in known else stem


def _latest(annotations: list[Any]) -> dict[str, Any] | None:
    done = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if not done:
        return None
    return max(enumerate(done), key=lambda ia: (str(ia[1].get("updated_at") or ia[1].get("created_at") or ""), ia[0]))[
        1
    ]


def _annotation_mask(annotation: dict[str, Any], label: str, where: str) -> np.ndarray | None:
    results = annotation.get("result", [])
    if not isinstance(results, list):
        raise LabelFileError(f"{where}: 'result' is not a list")
    mask = None
    for n, region in enumerate(results):
        if not isinstance(region, dict) or str(region.get("type", "")).lower() != "brushlabels":
            continue
        value = region["value"] if isinstance(region.get("value"), dict) else {}
        labels = [str(x).lower() for x in value.get("brushlabels", [])]
        if label.lower() not in labels:
            continue
        here = f"{where}: result[{n}]"
        if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
            raise LabelFileError(f"{here}: expected value.format 'rle' with value.rle, a list of bytes")
        width, height = region.get("original_width"), region.get("original_height")
        if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
            raise LabelFileError(f"{here}: expected original_width and original_height (pixels)")
        try:
            region_mask = rle_to_mask(value["rle"], height, width)
        except BrushRleError as exc:
            raise LabelFileError(f"{here}: value.rle: {exc}") from None
        if mask is not None and mask.shape != region_mask.shape:
            raise LabelFileError(f"{here}: {width}x{height}, but an earlier region of the task has another size")
        mask = region_mask if mask is None else mask | region_mask
    return mask if mask is not None and mask.any() else None


def read_export(path: Path, label: str = "crack", known: Container[str] = ()) -> tuple[list[LabelledFrame], list[str]]:
    """The frames a Label Studio JSON export has a finished annotation for (its latest one, skipped ones left
    out) and the stems of the tasks nobody annotated yet. `known`: the site's stems (to see past upload prefixes)."""
    if not path.is_file():
        raise LabelFileError(f"{path}: no such file")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelFileError(f"{path}: not valid JSON ({exc}); expected Label Studio's JSON export") from None
    if not isinstance(document, list):
        raise LabelFileError(
            f"{path}: expected Label Studio's JSON export (a list of tasks; in Label Studio: Export > JSON), "
            f"got a JSON {type(document).__name__}"
        )
    frames: dict[str, LabelledFrame] = {}
    open_tasks = []
    for n, task in enumerate(document):
        where = f"{path}: task {task.get('id', n) if isinstance(task, dict) else n}"
        if not isinstance(task, dict):
            raise LabelFileError(f"{where}: expected an object with data and annotations")
        stem = stem_of(task, known)
        if not stem:
            raise LabelFileError(f"{where}: no data.image (the task's image URL) to name its frame by")
        annotations = task.get("annotations", [])
        if not isinstance(annotations, list):
            raise LabelFileError(f"{where}: 'annotations' is not a list")
        annotation = _latest(annotations)
        if annotation is None:
            open_tasks.append(stem)
            continue
        frames[stem] = LabelledFrame(stem, _annotation_mask(annotation, label, where))
    return list(frames.values()), open_tasks
