"""Few-shot adaptation, measured: does fine-tuning on N labelled images of an unseen surface pay?

Takes a segmenter run that never saw SOURCE (trained with --holdout SOURCE), labels the first N
images of SOURCE (sorted by name) as "the site's", runs `crack-train adapt` on them, and scores the
base and the adapted model in INT8 on the remaining images of SOURCE (tolerant F1, 2 px).

    python tools/adapt_experiment.py --run runs/seg_loo_sut_seg --source ../shared/data/sut_seg \\
        --n 20 --work runs/adapt20
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def split_source(source: Path, n: int, work: Path) -> tuple[Path, list]:
    from trainer.data.datasets import segmentation_pairs

    pairs = segmentation_pairs(source)
    site = work / "site" / source.name
    for sub in ("images", "masks"):
        (site / sub).mkdir(parents=True, exist_ok=True)
    for img, mask in pairs[:n]:
        shutil.copy(img, site / "images" / img.name)
        shutil.copy(mask, site / "masks" / mask.name)
    return site, pairs[n:]


def score(run_dir: Path, rest: list, size: int, thresholds: np.ndarray) -> dict:
    import cv2

    from edge.engine.preprocess import mask_to_binary, model_input, resize_mask
    from edge.engine.runtime import TFLiteModel
    from edge.sources.images import read_rgb
    from trainer.evaluation.crossval import int8_of
    from trainer.export.metrics import tolerant_counts, tolerant_from_counts
    from trainer.export.predict import predict

    def readable(path: Path, pixels: np.ndarray | None) -> np.ndarray:
        if pixels is None:
            raise SystemExit(f"{path}: missing or not a readable image")
        return pixels

    model = TFLiteModel(content=int8_of(run_dir))
    images = np.stack([model_input(readable(i, read_rgb(i)), size, size) for i, _ in rest])
    masks = np.stack(
        [
            resize_mask(mask_to_binary(readable(m, cv2.imread(str(m), cv2.IMREAD_UNCHANGED))), size, size)
            for _, m in rest
        ]
    ).astype(bool)
    probs = predict(model, images)[..., 0]
    out = {}
    for t in thresholds:
        counts = np.array([tolerant_counts(m, p >= t) for m, p in zip(masks, probs)])
        out[f"{t:.2f}"] = tolerant_from_counts(counts)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path, help="segmenter run trained without SOURCE")
    ap.add_argument("--source", required=True, type=Path, help="the held-out segmentation folder (images/ + masks/)")
    ap.add_argument("--n", type=int, default=20, help="labelled images given to adaptation")
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument(
        "--threshold", type=float, default=None, help="pixel threshold to report (default: the best of the base)"
    )
    ap.add_argument(
        "--forgetting",
        type=Path,
        default=None,
        metavar="DIR",
        help="a segmentation folder the site never saw (e.g. the other leave-one-out source): base and adapted "
        "are scored on all of it at the same threshold, so a loss elsewhere shows",
    )
    ap.add_argument("adapt_args", nargs="*", help="extra arguments for crack-train adapt (after --)")
    args = ap.parse_args()

    from trainer.export.convert import publish_finetune

    args.work.mkdir(parents=True, exist_ok=True)
    site, rest = split_source(args.source, args.n, args.work)
    finetune = args.work / "finetune"
    publish_finetune(args.run, "segmenter", finetune)
    t0 = time.time()
    adapted = args.work / "adapted"
    cmd = [
        sys.executable,
        "-m",
        "trainer.cli",
        "adapt",
        "--base",
        str(finetune / "segmenter.keras"),
        "--data",
        str(site),
        "--out",
        str(adapted),
        *args.adapt_args,
    ]
    subprocess.run(cmd, check=True, cwd=REPO)
    seconds = time.time() - t0
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = used.ru_utime + used.ru_stime  # every core's time, the conversion-free adaptation only
    size = json.loads((args.run / "run.json").read_text())["spec"]["size"]
    thresholds = np.round(np.append(np.arange(0.1, 0.96, 0.05), 0.97), 2)
    base = score(args.run, rest, size, thresholds)
    new = score(adapted, rest, size, thresholds)
    t_base = args.threshold if args.threshold is not None else float(max(base, key=lambda k: base[k]["tolerant_f1"]))
    key = f"{t_base:.2f}"
    site_threshold = float(json.loads((adapted / "adapt.json").read_text())["threshold"])
    best_new = max(new, key=lambda k: new[k]["tolerant_f1"])
    result = {
        "source": args.source.name,
        "labelled": args.n,
        "scored": len(rest),
        "adapt_seconds": round(seconds, 1),
        "adapt_cpu_seconds": round(cpu_seconds, 1),
        "threshold": t_base,
        "base": base[key],
        "adapted": new[key],
        "adapted_best": {"threshold": float(best_new), **new[best_new]},
        # What a device gets: the threshold adapt chose on the site's own held-out labels (export writes it).
        "adapted_at_site_threshold": {"threshold": site_threshold, **new[f"{site_threshold:.2f}"]},
        "command": " ".join(cmd),
    }
    if args.forgetting is not None:
        from trainer.data.datasets import segmentation_pairs

        other = segmentation_pairs(args.forgetting)
        before, after = score(args.run, other, size, thresholds)[key], score(adapted, other, size, thresholds)[key]
        result["forgetting"] = {
            "source": args.forgetting.name,
            "scored": len(other),
            "base": before,
            "adapted": after,
            "delta_tolerant_f1": after["tolerant_f1"] - before["tolerant_f1"],
        }
    (args.work / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
