"""Bundle verification: every way a bundle can be unfit to serve gives its own one-line error."""

import json
import shutil

import numpy as np
import pytest

from edge.engine import bundle as B
from edge.engine.runtime import RuntimeUnavailable, load_interpreter_class
from tests.helpers import REPO
from tests.helpers.cli import run_module


def edit_manifest(bundle_dir, change):
    path = bundle_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_shipped_default_bundle_loads_and_is_full_integer():
    loaded = B.load_bundle(REPO / "models" / "default")
    for model in (loaded.classifier, loaded.segmenter):
        assert model.input.dtype == np.uint8 and model.output.dtype == np.uint8
    assert len(loaded.sha256) == 64


def test_missing_bundle_directory(tmp_path):
    with pytest.raises(B.BundleNotFound, match="no such bundle directory"):
        B.load_bundle(tmp_path / "nope")


def test_missing_model_file(bundle_copy):
    (bundle_copy / "segmenter.tflite").unlink()
    with pytest.raises(B.ModelFileMissing, match="segmenter model file is missing"):
        B.load_bundle(bundle_copy)


def test_checksum_mismatch(bundle_copy):
    path = bundle_copy / "classifier.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(B.ChecksumMismatch, match="does not match the manifest") as info:
        B.load_bundle(bundle_copy)
    assert B.sha256_file(path)[:12] not in str(info.value)  # the file's own hash is never printed


def _replace_model(bundle_dir, role, content: bytes):
    (bundle_dir / f"{role}.tflite").write_bytes(content)
    edit_manifest(
        bundle_dir,
        lambda m: m["models"][role].update(sha256=B.sha256_file(bundle_dir / f"{role}.tflite"), bytes=len(content)),
    )


def test_non_tflite_file(bundle_copy):
    _replace_model(bundle_copy, "classifier", b"this is a JPEG, honest" * 10)
    with pytest.raises(B.NotTFLite, match="not a TFLite model"):
        B.load_bundle(bundle_copy)


def test_truncated_tflite_file(bundle_copy):
    content = (bundle_copy / "segmenter.tflite").read_bytes()
    _replace_model(bundle_copy, "segmenter", content[: len(content) // 3])
    with pytest.raises(B.NotTFLite, match="could not load"):
        B.load_bundle(bundle_copy)


def test_wrong_input_shape_in_manifest(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m["models"]["classifier"]["input"].update(shape=[1, 7, 7, 3]))
    with pytest.raises(B.TensorMismatch, match=r"input shape .* != manifest \[1, 7, 7, 3\]"):
        B.load_bundle(bundle_copy)


def test_float_model_is_refused(bundle_copy):
    fp32 = (bundle_copy / "reference" / "classifier.fp32.tflite").read_bytes()
    _replace_model(bundle_copy, "classifier", fp32)
    edit_manifest(
        bundle_copy, lambda m: m["models"]["classifier"]["input"].update(dtype="float32", scale=0.0, zero_point=0)
    )
    edit_manifest(
        bundle_copy, lambda m: m["models"]["classifier"]["output"].update(dtype="float32", scale=0.0, zero_point=0)
    )
    with pytest.raises(B.NotFullInteger, match="full-integer"):
        B.load_bundle(bundle_copy)


def test_unknown_schema_version(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m.update(schema_version=99))
    with pytest.raises(B.UnsupportedSchema, match="schema_version 99 is not supported"):
        B.load_bundle(bundle_copy)


def test_bundle_needing_newer_crackd(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m.update(min_crackd_version="99.0.0"))
    with pytest.raises(B.NeedsNewerCrackd, match=r"needs crackd >= 99\.0\.0"):
        B.load_bundle(bundle_copy)


def test_manifest_that_is_not_json(bundle_copy):
    (bundle_copy / "manifest.json").write_text("{ not json")
    with pytest.raises(B.ManifestInvalid, match="not valid JSON"):
        B.load_bundle(bundle_copy)


def test_manifest_missing_a_key_names_it(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m["models"]["segmenter"].pop("threshold"))
    with pytest.raises(B.ManifestInvalid, match=r"models\.segmenter: missing key 'threshold'"):
        B.load_bundle(bundle_copy)


def test_the_classifier_gates_at_its_threshold_unless_the_bundle_sets_a_gate_threshold(bundle_copy):
    threshold = B.read_manifest(bundle_copy).classifier.threshold
    edit_manifest(bundle_copy, lambda m: m["models"]["classifier"].pop("gate_threshold", None))
    assert B.read_manifest(bundle_copy).gate_threshold == threshold  # as bundles 1.0.0 and 1.1.0: none set
    edit_manifest(bundle_copy, lambda m: m["models"]["classifier"].update(gate_threshold=0.15))
    manifest = B.read_manifest(bundle_copy)
    assert manifest.gate_threshold == 0.15 and manifest.classifier.threshold == threshold


@pytest.mark.parametrize("gate", [1.5, "0.2", True])
def test_a_gate_threshold_that_is_no_score_is_refused_by_name(bundle_copy, gate):
    edit_manifest(bundle_copy, lambda m: m["models"]["classifier"].update(gate_threshold=gate))
    with pytest.raises(B.ManifestInvalid, match=r"models\.classifier\.gate_threshold: expected a score from 0 to 1"):
        B.read_manifest(bundle_copy)


def test_missing_golden_file(bundle_copy):
    shutil.rmtree(bundle_copy / "golden")
    with pytest.raises(B.ModelFileMissing, match="golden sample"):
        B.load_bundle(bundle_copy)


def test_runtime_auto_prefers_litert():
    name, cls = load_interpreter_class("auto")
    assert name == "ai-edge-litert" and cls.__name__ == "Interpreter"


def test_runtime_that_is_not_installed_says_what_to_install():
    with pytest.raises(RuntimeUnavailable, match="pip install"):
        load_interpreter_class("tflite-runtime")


def test_runtime_from_environment(monkeypatch):
    pytest.importorskip("tensorflow")  # the runtime named here: absent on a device-only install
    monkeypatch.setenv("CRACKD_RUNTIME", "tensorflow")
    name, _ = load_interpreter_class("auto")
    assert name == "tensorflow"


def test_no_runtime_at_all(monkeypatch):
    """With every runtime module unimportable, loading fails with one clear error."""
    import sys

    for module in (
        "ai_edge_litert",
        "ai_edge_litert.interpreter",
        "tflite_runtime",
        "tflite_runtime.interpreter",
        "tensorflow",
    ):
        monkeypatch.setitem(sys.modules, module, None)  # None in sys.modules makes `import` raise ImportError
    with pytest.raises(RuntimeUnavailable, match="no TFLite runtime could be imported"):
        load_interpreter_class("auto")


def test_unknown_runtime_name():
    with pytest.raises(RuntimeUnavailable, match="unknown runtime 'onnx'"):
        load_interpreter_class("onnx")


# ------------------------------------------------------------------------- paths in the manifest stay inside the bundle


@pytest.mark.parametrize(
    "name",
    [
        "/etc/passwd",
        "../x/classifier.tflite",
        "golden/../../x",
        "./classifier.tflite",
        "a//b",
        "",
        "a\\b",
        "golden/",
        "x\x00y",
    ],
)
def test_manifest_file_names_must_be_plain_relative_names_inside_the_bundle(bundle_copy, name):
    edit_manifest(bundle_copy, lambda m: m["models"]["segmenter"].update(file=name))
    with pytest.raises(B.UnsafePath, match=r"models.segmenter.file: .* is not a plain relative name inside the bundle"):
        B.read_manifest(bundle_copy)


def test_reference_and_golden_paths_are_confined_too(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m["models"]["classifier"]["reference"].update(file="/etc/shadow"))
    with pytest.raises(B.UnsafePath, match=r"models\.classifier\.reference\.file"):
        B.read_manifest(bundle_copy)
    edit_manifest(
        bundle_copy,
        lambda m: (
            m["models"]["classifier"]["reference"].update(file="reference/classifier.fp32.tflite"),
            m["golden"]["samples"][2].update(segmenter_output="../../etc/hostname"),
        ),
    )
    with pytest.raises(B.UnsafePath, match=r"golden.samples\[2\].segmenter_output"):
        B.read_manifest(bundle_copy)


def test_a_model_file_that_is_a_symlink_is_not_loaded(bundle_copy, tmp_path):
    outside = tmp_path / "elsewhere.tflite"
    shutil.move(bundle_copy / "classifier.tflite", outside)
    (bundle_copy / "classifier.tflite").symlink_to(outside)
    with pytest.raises(B.UnsafePath, match=r"classifier\.tflite: a symbolic link"):
        B.load_bundle(bundle_copy)


def _cli(module, *args):
    return run_module(module, *args, timeout=120)


def test_crackd_infer_refuses_a_bundle_whose_manifest_points_outside_it(bundle_copy, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(bundle_copy / "classifier.tflite", outside / "classifier.tflite")
    edit_manifest(bundle_copy, lambda m: m["models"]["classifier"].update(file="../outside/classifier.tflite"))
    image = REPO / "models" / "default" / "golden" / "00.png"

    r = _cli("edge.cli", "infer", "--bundle", str(bundle_copy), str(image))

    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"crackd: error: {bundle_copy / 'manifest.json'}: models.classifier.file: "
        "'../outside/classifier.tflite' is not a plain relative name inside the bundle"
    ]


def test_crack_deploy_refuses_a_bundle_whose_manifest_points_outside_it_before_connecting(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m["models"]["classifier"].update(file="/etc/passwd"))

    r = _cli("deploy.cli", "push", str(bundle_copy), "no-such-host.invalid")

    assert r.returncode == 1
    assert "models.classifier.file: '/etc/passwd' is not a plain relative name inside the bundle" in r.stderr
    assert "not deployed anywhere" in r.stderr and "Traceback" not in r.stderr
