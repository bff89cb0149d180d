"""`crack-train label export|import`: a site's frames to CVAT or Label Studio and the corrected masks back.

No TensorFlow here (numpy, OpenCV, zipfile, json): labelling runs on any bench machine.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

FORMATS = ("cvat", "labelstudio")


def _shown(stems: list[str], limit: int = 5) -> str:
    return ", ".join(stems[:limit]) + (f" and {len(stems) - limit} more" if len(stems) > limit else "")


def cmd_label_export(args) -> int:
    from trainer.cli.checks import InputError
    from trainer.labelling.site import site_frames

    site, out = Path(args.site), Path(args.out)
    if out.is_dir():
        raise InputError(f"--out {out}: is a directory; name the file to write (e.g. {out / 'task.zip'})")
    if args.format == "labelstudio" and out.suffix.lower() == ".xml":
        raise InputError(f"--out {out}: the labelling config is written to OUT.xml; name the tasks file OUT.json")
    frames = site_frames(site, Path(args.predicted) if args.predicted else None)
    counts = {kind: sum(f.drawn and f.source == kind for f in frames) for kind in ("predicted", "masks")}
    drawn = f"{counts['predicted']} with crackd's predicted masks, {counts['masks']} with the site's labels"
    if args.format == "cvat":
        from trainer.labelling.cvat import write_task

        write_task(frames, out, args.label, with_images=not args.without_images)
        print(f"wrote {out}: CVAT 'Segmentation mask 1.1', {len(frames)} frames ({drawn}), label {args.label!r}")
        print(
            "next, in CVAT: create a task with the label "
            f"{args.label!r} and the images of {site / 'images'}, then Actions > Upload annotations > "
            f"Segmentation mask 1.1 > {out.name}; when done: Actions > Export task dataset (or Export dataset) > "
            f"Segmentation mask 1.1, and crack-train label import EXPORT.zip {site}"
        )
        return 0
    from trainer.labelling.labelstudio import local_files_url, write_tasks

    if args.image_url_prefix:
        urls = {f.stem: args.image_url_prefix + f.image.name for f in frames}
    else:
        root = Path(args.document_root) if args.document_root else site.resolve().parent
        urls = {f.stem: local_files_url(f.image, root) for f in frames}
    write_tasks(frames, urls, out, args.label)
    print(f"wrote {out}: {len(frames)} Label Studio tasks ({drawn}), label {args.label!r}")
    print(f"wrote {out.with_suffix('.xml')}: the labelling config (Settings > Labeling Interface > Code)")
    if not args.image_url_prefix:
        print(
            "start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
            f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root.resolve()}, add Settings > Cloud Storage > Add Source "
            f"Storage > Local Files with the path {(site / 'images').resolve()} (Save, do not sync), "
            f"then Import {out.name}"
        )
    return 0


def _format_of(path: Path, given: str | None) -> str:
    if given:
        return given
    if path.suffix.lower() == ".zip" or (path.is_file() and zipfile.is_zipfile(path)):
        return "cvat"
    return "labelstudio"


def cmd_label_import(args) -> int:
    from edge.sources.images import image_files
    from trainer.labelling import cvat, labelstudio
    from trainer.labelling.site import write_labels

    source, site = Path(args.file), Path(args.site)
    have = {p.stem for p in image_files(site / "images")} if (site / "images").is_dir() else set()
    waiting: list[str] = []
    if _format_of(source, args.format) == "cvat":
        frames = cvat.read_export(source, args.label, have_images=have)
    else:
        frames, waiting = labelstudio.read_export(source, args.label, known=have)
    summary = write_labels(site, frames, source)
    empty = sum(f.mask is None for f in frames)
    print(
        f"wrote {len(summary.written)} masks to {site / 'masks'} ({len(summary.written) - empty} with cracks, "
        f"{empty} crack-free)"
    )
    if summary.images_added:
        print(f"copied {len(summary.images_added)} images from the export to {site / 'images'}")
    if waiting:
        print(f"{len(waiting)} tasks have no finished annotation yet (left as they were): {_shown(waiting)}")
    masks = {p.stem for p in image_files(site / "masks")}
    unlabelled = sorted(p.stem for p in image_files(site / "images") if p.stem not in masks)
    if unlabelled:
        print(
            f"{len(unlabelled)} images in {site / 'images'} have no mask yet: {_shown(unlabelled)} "
            "(crack-train adapt needs a mask for each image: label them, or move them out of images/)"
        )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "label",
        help="label a site's frames in CVAT or Label Studio, starting from crackd's predicted masks",
        description="export: a site folder (SITE/images, and crackd's masks in SITE/predicted as `crackd infer "
        "--mask-dir` writes them) as a task for CVAT (Segmentation mask 1.1 zip) or Label Studio (tasks JSON with "
        "brush pre-annotations), so labelling is correcting. import: the tool's export back into SITE/masks "
        "(0/255 PNG named by the image), which crack-train adapt trains on. A frame's pre-annotation is its mask in "
        "SITE/masks when it has one, else crackd's prediction.",
    )
    actions = p.add_subparsers(dest="action", required=True)

    e = actions.add_parser("export", help="write a labelling task for CVAT or Label Studio")
    e.add_argument("site", metavar="SITE_DIR", help="the site folder (images/, predicted/, masks/)")
    e.add_argument(
        "--format",
        choices=FORMATS,
        required=True,
        help="cvat: a Segmentation mask 1.1 zip; labelstudio: a tasks JSON (and OUT.xml, the labelling config)",
    )
    e.add_argument("--out", required=True, metavar="FILE", help="e.g. task.zip (cvat) or tasks.json (labelstudio)")
    e.add_argument("--predicted", metavar="DIR", help="crackd's predicted masks (default: SITE_DIR/predicted)")
    e.add_argument("--label", default="crack", help="the label's name in the tool (default: crack)")
    e.add_argument(
        "--without-images",
        action="store_true",
        help="cvat: leave the images out of the zip (the CVAT task has them already)",
    )
    where = e.add_mutually_exclusive_group()
    where.add_argument(
        "--document-root",
        metavar="DIR",
        help="labelstudio: Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: the folder "
        "above SITE_DIR); images are referenced as /data/local-files/?d=PATH below it",
    )
    where.add_argument(
        "--image-url-prefix",
        metavar="URL",
        help="labelstudio: reference each image as URL + its file name instead (a web server that "
        "serves SITE_DIR/images)",
    )
    e.set_defaults(func=cmd_label_export)

    i = actions.add_parser("import", help="read a CVAT or Label Studio export back into SITE_DIR/masks")
    i.add_argument("file", metavar="FILE", help="CVAT's Segmentation mask 1.1 zip or Label Studio's JSON export")
    i.add_argument("site", metavar="SITE_DIR")
    i.add_argument("--format", choices=FORMATS, default=None, help="default: cvat for a zip, labelstudio otherwise")
    i.add_argument("--label", default="crack", help="the label's name in the tool (default: crack)")
    i.set_defaults(func=cmd_label_import)
