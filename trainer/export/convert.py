"""Export trained Keras models to a verified full-integer INT8 TFLite bundle.

Calibration images come from the real training files, read and resized by the
device's own preprocessing (`edge.engine.preprocess`). Each model is converted twice:
INT8 (uint8 in/out, int8 inside, TFLITE_BUILTINS_INT8 only, so an op without an
integer kernel fails the conversion instead of silently falling back to float)
and FP32 (kept in `reference/` for comparison). The INT8 model must agree with
the FP32 one on the validation split within a tolerance, or export fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge import __version__
from edge.engine.bundle import MANIFEST, SCHEMA_VERSION, load_bundle, sha256_file
from edge.engine.preprocess import PREPROCESSING, model_input
from edge.engine.runtime import TFLiteModel, float_tensors
from edge.engine.selftest import DEFAULT_TOLERANCE as GOLDEN_RULE
from edge.sources.images import read_rgb
from trainer.export.metrics import role_quality
from trainer.export.predict import predict

GOLDEN_TOLERANCE = dict(GOLDEN_RULE)  # what the device's self-test accepts (see edge.engine.selftest)


class ExportError(RuntimeError):
    """The models cannot be exported as a servable full-integer bundle; the message says why."""


@dataclass(frozen=True)
class ExportConfig:
    calibration_images: int = 200
    tolerance: float = 0.01  # largest INT8 drop allowed vs FP32 on F1 / Dice (0.01 = one point)
    golden_samples: int = 4
    seed: int = 0


def load_checkpoint(run_dir: Path):
    """A run's best checkpoint at the device's fixed input size.

    A segmenter trained on crops is size-free until its run finishes; one stopped early is rebuilt at
    its spec's size here (the weights do not depend on the input size).
    """
    import keras

    # imported for their side effect: registering the custom objects the checkpoints name
    from trainer.training.train import bce_dice_loss, bce_tversky_loss, dice_coefficient  # noqa: F401

    model = keras.models.load_model(run_dir / "best.keras", compile=False)
    if model.input_shape[1] is None:
        from trainer.models.architectures import SegmenterSpec, build_segmenter

        spec = json.loads((run_dir / "run.json").read_text())["spec"]
        fixed = build_segmenter(SegmenterSpec(**{k: v for k, v in spec.items() if k != "architecture"}))
        fixed.set_weights(model.get_weights())
        model = fixed
    return model


@contextlib.contextmanager
def quiet_converter():
    """Hide what TensorFlow's converter prints (hundreds of lines: the SavedModel signature, MLIR passes, absl
    warnings) on stdout and stderr, at the file-descriptor level where the C++ side writes. A conversion that fails
    raises with its own message (convert_int8 reports its first error line), so nothing needed is hidden."""
    import absl.logging
    import tensorflow as tf

    absl.logging.set_verbosity(absl.logging.ERROR)
    tf.get_logger().setLevel("ERROR")
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with (
        tempfile.TemporaryFile() as sink,
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),  # Python-level prints (Keras's "Saved artifact ...")
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def convert_int8(model, calibration: np.ndarray) -> bytes:
    """Full-integer INT8 conversion with uint8 input/output; raises ExportError on float-only ops."""
    import tensorflow as tf

    def representative():
        for image in calibration:
            yield [image[None].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    try:
        with quiet_converter():
            content = converter.convert()
    except Exception as exc:  # the converter raises ConverterError / RuntimeError / ValueError with long MLIR text
        first = next(
            (line for line in str(exc).splitlines() if "error" in line.lower()),
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        raise ExportError(
            f"{model.name}: cannot be converted to full-integer INT8 (an op has no integer kernel?): {first.strip()}"
        ) from None
    floats = float_tensors(TFLiteModel(content=content))
    if floats:
        raise ExportError(
            f"{model.name}: cannot be converted to full-integer INT8: {len(floats)} float tensors remain "
            f"(e.g. {floats[0]}), so some op has no integer kernel; replace it with an INT8-friendly layer"
        )
    return content


def convert_fp32(model) -> bytes:
    import tensorflow as tf

    with quiet_converter():
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def calibration_set(run_dir: Path, size: int, n: int, seed: int) -> np.ndarray:
    """`n` real training images (from the run's splits.json) through the device preprocessing."""
    files = json.loads((run_dir / "splits.json").read_text())["files"]
    # Patches cut from segmentation images are named "file@x,y": calibrate on their whole source image.
    paths = sorted(
        {p.split("@")[0] for parts in files.values() for p in parts.get("train", []) if not p.startswith("synth:")}
    )
    rng = np.random.default_rng(seed)
    rng.shuffle(paths)
    images = []
    for p in paths:
        rgb = read_rgb(Path(p))
        if rgb is not None:
            images.append(model_input(rgb, size, size))
        if len(images) >= n:
            break
    if not images:
        raise ExportError(
            f"{run_dir}: no real training images found for calibration (splits.json lists none that are readable)"
        )
    return with_range_pins(images, size)


def with_range_pins(images: list[np.ndarray], size: int) -> np.ndarray:
    """Stack calibration images plus a white and a black frame.

    They pin the input range to the full 0..255, so the uint8 input quantization is the identity
    (scale 1, zero point 0) and the device feeds camera bytes unchanged.
    """
    return np.stack([*images, np.full((size, size, 3), 255, np.uint8), np.zeros((size, size, 3), np.uint8)])


def _tensor_dict(info) -> dict:
    return {"shape": list(info.shape), "dtype": info.dtype.name, "scale": info.scale, "zero_point": info.zero_point}


def _data_provenance(run_dirs: list[Path]) -> dict:
    """What the models were trained on: each data folder's SOURCE.txt (dataset, licence, citation) and the runs."""
    from trainer.export.provenance import source_entry

    runs = {Path(r).name: json.loads((Path(r) / "run.json").read_text()) for r in run_dirs}
    folders = list(dict.fromkeys(d for meta in runs.values() for d in meta["data"]))
    sources = [{k: v for k, v in source_entry(d).items() if k not in ("path", "from")} for d in folders]
    return {"sources": sources, "runs": runs}


@dataclass
class RoleExport:
    """One converted model, ready to go into a bundle."""

    int8: bytes
    fp32: bytes
    architecture: dict
    metrics: dict
    quantization: dict
    threshold: float = 0.5
    # The classifier's high-recall gate (edge.engine.bundle.Manifest.gate_threshold), when it differs from `threshold`.
    gate_threshold: float | None = None


def validate_role(
    role: str, int8: bytes, fp32: bytes, val_x: np.ndarray, val_y: np.ndarray, tolerance: float
) -> tuple[dict, dict]:
    """INT8 vs FP32 on the validation split: (metrics, agreement); raises ExportError past the tolerance."""
    p8, p32 = predict(TFLiteModel(content=int8), val_x), predict(TFLiteModel(content=fp32), val_x)
    key, met8 = role_quality(role, val_y, p8)
    _, met32 = role_quality(role, val_y, p32)
    if role == "classifier":
        s8, s32 = p8.reshape(-1), p32.reshape(-1)
        agreement = {
            "decision_agreement": float(np.mean((s8 >= 0.5) == (s32 >= 0.5))),
            "mean_abs_score_diff": float(np.mean(np.abs(s8 - s32))),
        }
    else:
        agreement = {
            "pixel_agreement": float(np.mean((p8 >= 0.5) == (p32 >= 0.5))),
            "mean_abs_prob_diff": float(np.mean(np.abs(p8 - p32))),
        }
    drop = met32[key] - met8[key]
    agreement.update({f"{key}_int8": met8[key], f"{key}_fp32": met32[key], "tolerance": tolerance})
    if drop > tolerance:
        raise ExportError(
            f"{role}: INT8 {key} {met8[key]:.4f} is {drop:.4f} below FP32 {met32[key]:.4f} (tolerance {tolerance}); "
            "check the calibration data or raise --tolerance"
        )
    metrics = {"validation_int8": met8, "validation_fp32": met32, "validation_images": int(len(val_x))}
    return metrics, agreement


def publish_finetune(run_dir: Path, role: str, out_dir: Path) -> dict:
    """Copy a run's best checkpoint to `out_dir/ROLE.keras` with `ROLE.json` (what `crack-train adapt` starts from)."""
    from trainer.models.architectures import SEGMENTER_SIZES

    meta = json.loads((run_dir / "run.json").read_text())
    spec = meta["spec"]
    info = {"kind": meta["kind"], "spec": spec, "run": run_dir.name}
    if meta["kind"] == "segmenter":
        info["model_size"] = next(
            (
                name
                for name, s in SEGMENTER_SIZES.items()
                if (s.base, s.depth, s.stem_stride, s.fine_head)
                == (spec["base"], spec["depth"], spec.get("stem_stride", 1), spec.get("fine_head", 0))
            ),
            None,
        )
        if info["model_size"] is None:
            raise ExportError(f"{run_dir}: segmenter {spec} is not one of the named sizes; adapt needs a named size")
    out_dir.mkdir(parents=True, exist_ok=True)
    # The weights alone (adapt starts a fresh optimizer): a checkpoint saved with its optimizer state is 3x larger.
    load_checkpoint(run_dir).save(out_dir / f"{role}.keras")
    info["sha256"] = sha256_file(out_dir / f"{role}.keras")
    (out_dir / f"{role}.json").write_text(json.dumps(info, indent=1))
    return info


def _golden_image(bundle_dir: Path, sample: dict) -> np.ndarray:
    """A golden sample image of a bundle whose segmenter is kept (its golden samples are kept with it)."""
    rgb = read_rgb(bundle_dir / sample["image"])
    if rgb is None:
        raise ExportError(f"{bundle_dir / sample['image']}: golden sample image is missing or unreadable")
    return rgb


def kept_role(bundle_dir: Path, role: str, reference: bool = True) -> RoleExport:
    """One model of an existing bundle, unchanged (export a bundle where only the other model was retrained);
    without `reference`, its FP32 reference is not read (a base only compared with, not kept)."""
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    entry = manifest["models"][role]
    return RoleExport(
        int8=(bundle_dir / entry["file"]).read_bytes(),
        fp32=(bundle_dir / entry["reference"]["file"]).read_bytes() if reference else b"",
        architecture=entry["architecture"],
        metrics=entry["metrics"],
        quantization=manifest.get("quantization", {}).get(role, {}),
        threshold=float(entry.get("threshold", 0.5)),
        gate_threshold=entry.get("gate_threshold"),
    )


def kept_base(keep_from: Path | None) -> dict[str, RoleExport]:
    """Both models of the base bundle (`--keep-from`; INT8 and threshold: what is compared), or none without one."""
    if keep_from is None:
        return {}
    manifest = json.loads((Path(keep_from) / MANIFEST).read_text())
    roles = [role for role in ("classifier", "segmenter") if role in manifest["models"]]
    return {role: kept_role(Path(keep_from), role, reference=False) for role in roles}


def export_bundle(
    classifier_run: Path | None,
    segmenter_run: Path | None,
    out_dir: Path,
    version: str,
    cfg: ExportConfig = ExportConfig(),
    progress=print,
    keep_from: Path | None = None,
    thresholds: dict[str, float] | None = None,
    threshold_source: str | None = None,
    finetune_dir: Path | None = None,
    gate_threshold: float | None = None,
    force: bool = False,
    gate_threshold_source: str | None = None,
) -> Path:
    """Convert both trained runs (or one, keeping the other model of `keep_from`), validate INT8 against FP32,
    and write a verified bundle. `thresholds` (role -> value) are recorded in the manifest with `threshold_source`;
    a role without one takes the threshold `crack-train adapt` chose for its run, else the one of the same model in
    `keep_from` (the base bundle), else 0.5; a classifier adapted by `crack-train adapt` takes the gate threshold
    adapt chose on the site's held-out labels unless `gate_threshold` is given. A segmenter adapted to a site is
    scored against the base's on the site's held-out images and refused when worse, unless `force`."""
    from trainer.data.assemble import load_arrays
    from trainer.export import site

    roles, validation, runs = {}, {}, []
    for role, run_dir in (("classifier", classifier_run), ("segmenter", segmenter_run)):
        if run_dir is None:
            if keep_from is None:
                raise ExportError(
                    f"no {role} run given: name its run directory, or keep the {role} of a bundle with --keep-from"
                )
            progress(f"{role}: kept unchanged from {keep_from}")
            roles[role] = kept_role(Path(keep_from), role)
            continue
        run_dir = Path(run_dir)
        runs.append(run_dir)
        model = load_checkpoint(run_dir)
        size = int(model.input_shape[1])
        progress(f"{role}: calibrating on real training images ({run_dir})")
        calib = calibration_set(run_dir, size, cfg.calibration_images, cfg.seed)
        progress(f"{role}: converting to full-integer INT8 and FP32")
        int8, fp32 = convert_int8(model, calib), convert_fp32(model)
        _, (val_x, val_y) = load_arrays(run_dir / "heldout.npz")
        validation[role] = (val_x, val_y)
        progress(f"{role}: INT8 vs FP32 on {len(val_x)} validation images")
        metrics, agreement = validate_role(role, int8, fp32, val_x, val_y, cfg.tolerance)
        meta = json.loads((run_dir / "run.json").read_text())
        roles[role] = RoleExport(int8, fp32, meta["spec"], metrics, agreement)
    for role, value in (thresholds or {}).items():
        if not 0.0 < value < 1.0:
            raise ExportError(f"{role} threshold {value}: expected a probability between 0 and 1 (exclusive)")
        roles[role].threshold = float(value)
        roles[role].metrics = {**roles[role].metrics, "threshold_source": threshold_source}
    if gate_threshold is not None:
        if not 0.0 < gate_threshold < 1.0:
            raise ExportError(f"classifier gate threshold {gate_threshold}: expected a probability between 0 and 1")
        roles["classifier"].gate_threshold = float(gate_threshold)
        if gate_threshold_source:
            roles["classifier"].metrics = {
                **roles["classifier"].metrics,
                "gate_threshold_source": gate_threshold_source,
            }
    adapted_gate = site.adapted_gate(classifier_run) if classifier_run is not None else None
    if gate_threshold is None and adapted_gate is not None:
        roles["classifier"].gate_threshold, why = adapted_gate
        roles["classifier"].metrics = {**roles["classifier"].metrics, "gate_threshold_source": why}
    adapted = site.adapt_report(segmenter_run) if segmenter_run is not None else None
    base = kept_base(keep_from)
    for role, run_dir in (("classifier", classifier_run), ("segmenter", segmenter_run)):
        if run_dir is None or role in (thresholds or {}):
            continue
        if role == "segmenter" and adapted is not None:
            value, why = (
                adapted["threshold"],
                f"chosen by crack-train adapt on {adapted['images']['held_out']} held-out site images",
            )
        elif role in base:
            base_version = site.base_provenance(Path(str(keep_from)))["bundle_version"]
            value, why = base[role].threshold, f"carried over from the base bundle {base_version}"
        else:
            continue
        roles[role].threshold = float(value)
        roles[role].metrics = {**roles[role].metrics, "threshold_source": why}
    for role, r in roles.items():
        progress(f"{role}: threshold {r.threshold:.2f} ({r.metrics.get('threshold_source') or 'default'})")
        if r.gate_threshold is not None and r.metrics.get("gate_threshold_source"):
            progress(f"{role}: gate threshold {r.gate_threshold:.2f} ({r.metrics['gate_threshold_source']})")
    provenance_extra: dict = {}
    if adapted is not None and "segmenter" in base:
        assert segmenter_run is not None
        comparison = site.compare_on_site(
            segmenter_run,
            base["segmenter"].int8,
            base["segmenter"].threshold,
            roles["segmenter"].int8,
            roles["segmenter"].threshold,
        )
        b, n = comparison["base"], comparison["site"]
        progress(
            f"segmenter on {comparison['images']} held-out site images (INT8): tolerant F1 base "
            f"{b['tolerant_f1']:.3f} -> site {n['tolerant_f1']:.3f}, precision {b['tolerant_precision']:.3f} -> "
            f"{n['tolerant_precision']:.3f}, recall {b['tolerant_recall']:.3f} -> {n['tolerant_recall']:.3f}"
        )
        site.refuse_if_worse(comparison, force)
        roles["segmenter"].metrics = {**roles["segmenter"].metrics, "site_heldout": comparison}
    if adapted is not None:
        provenance_extra["site"] = site.site_provenance(adapted)
    if keep_from is not None:
        provenance_extra["base"] = site.base_provenance(Path(keep_from))
    if "segmenter" in validation:
        golden = golden_choice(*validation["segmenter"], cfg.golden_samples)
    else:
        assert keep_from is not None  # no segmenter run without a bundle to keep it from (checked above)
        kept = json.loads((Path(keep_from) / MANIFEST).read_text())["golden"]["samples"]
        golden = np.stack([_golden_image(Path(keep_from), s) for s in kept])
    provenance = _data_provenance(runs)
    if keep_from is not None and len(runs) < 2:
        provenance["kept_from"] = json.loads((Path(keep_from) / MANIFEST).read_text()).get("data", {})
    if finetune_dir is not None:
        provenance["finetune"] = {
            role: publish_finetune(Path(run), role, Path(finetune_dir))
            for role, run in (("classifier", classifier_run), ("segmenter", segmenter_run))
            if run is not None
        }
    # Devices receive the manifest: it says where the data came from by name and hash, not by training-host path.
    provenance = site.without_host_paths({**provenance, **provenance_extra})
    out = write_bundle(Path(out_dir), version, roles, golden, provenance)
    progress(f"bundle {version} written to {out}")
    return out


def golden_choice(images: np.ndarray, masks: np.ndarray, n: int) -> np.ndarray:
    """Pick `n` images for the golden self-test: half with cracks, half without (where available)."""
    has_crack = masks.reshape(len(masks), -1).max(axis=1) > 0
    with_crack, without = list(np.flatnonzero(has_crack)), list(np.flatnonzero(~has_crack))
    chosen = with_crack[: n - min(n // 2, len(without))]
    chosen += without[: n - len(chosen)]
    return images[chosen]


def write_bundle(
    out_dir: Path, version: str, roles: dict[str, RoleExport], golden_images: np.ndarray, provenance: dict
) -> Path:
    """Write model files, golden samples and manifest into `out_dir`, verified by the device's own loader first."""
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "reference").mkdir(parents=True)
    (tmp / "golden").mkdir()
    entries, int8_models = {}, {}
    for role, r in roles.items():
        (tmp / f"{role}.tflite").write_bytes(r.int8)
        (tmp / "reference" / f"{role}.fp32.tflite").write_bytes(r.fp32)
        m8 = TFLiteModel(content=r.int8)
        int8_models[role] = m8
        entries[role] = {
            "file": f"{role}.tflite",
            "sha256": sha256_file(tmp / f"{role}.tflite"),
            "bytes": len(r.int8),
            "architecture": r.architecture,
            "input": _tensor_dict(m8.input),
            "output": {
                **_tensor_dict(m8.output),
                "meaning": "P(crack) for the whole image"
                if role == "classifier"
                else "per-pixel P(crack) at the input size",
            },
            "preprocessing": PREPROCESSING,
            "labels": ["no_crack", "crack"],
            "threshold": r.threshold,
            **({"gate_threshold": r.gate_threshold} if r.gate_threshold is not None else {}),
            "metrics": r.metrics,
            "reference": {
                "file": f"reference/{role}.fp32.tflite",
                "sha256": sha256_file(tmp / "reference" / f"{role}.fp32.tflite"),
            },
        }
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "bundle_version": version,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "min_crackd_version": __version__,
        "created_by": f"crack-train {__version__}",
        "models": entries,
        "quantization": {role: r.quantization for role, r in roles.items()},
        "golden": _write_golden(tmp, golden_images, int8_models),
        "data": provenance,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    load_bundle(tmp)  # the device's own check, before anything is published
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def _write_golden(bundle_dir: Path, images: np.ndarray, models: dict) -> dict:
    """Store a few images and the raw INT8 outputs they gave, for on-device self-tests."""
    samples = []
    for k, image in enumerate(images):
        name, seg_name = f"golden/{k:02d}.png", f"golden/{k:02d}.segmenter.png"
        cv2.imwrite(str(bundle_dir / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cls, seg = models["classifier"], models["segmenter"]
        cls_out = cls.run(model_input(image, *cls.input_hw))
        cv2.imwrite(str(bundle_dir / seg_name), seg.run(model_input(image, *seg.input_hw))[..., 0])
        # sizes too: the device checks each file's size against the manifest before it reads or copies it
        samples.append(
            {
                "image": name,
                "sha256": sha256_file(bundle_dir / name),
                "bytes": (bundle_dir / name).stat().st_size,
                "classifier_output": int(cls_out.reshape(-1)[0]),
                "segmenter_output": seg_name,
                "segmenter_output_sha256": sha256_file(bundle_dir / seg_name),
                "segmenter_output_bytes": (bundle_dir / seg_name).stat().st_size,
            }
        )
    return {"tolerance": GOLDEN_TOLERANCE, "samples": samples}
