"""The trainer end to end at toy scale: synthesize -> train both models -> export INT8 -> run on the device path."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edge.engine.bundle import sha256_file
from tests.helpers import REPO

pytest.importorskip("tensorflow")  # the trainer: absent on a device-only install (pip install .[edge])


def crack_train(*args: str) -> None:
    """`crack-train ARGS` in this process: TensorFlow is imported once for the module, not once per command."""
    from trainer.cli import main

    assert main(list(args)) == 0


def run(*args, timeout=600):
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = root / "synth"
    crack_train("synth", "--out", str(data), "--n", "36", "--size", "64", "--seed", "3")
    crack_train(
        "classifier",
        "--data",
        str(data),
        "--alpha",
        "0.35",
        "--size",
        "32",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "8",
        "--out",
        str(root / "cls"),
    )
    crack_train(
        "segmenter",
        "--data",
        str(data),
        "--size",
        "32",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "8",
        "--out",
        str(root / "seg"),
    )
    return root


def test_training_runs_leave_checkpoints_logs_and_splits(toy_runs):
    for name in ("cls", "seg"):
        run_dir = toy_runs / name
        for f in ("best.keras", "last.keras", "log.csv", "history.json", "splits.json", "run.json", "heldout.npz"):
            assert (run_dir / f).is_file(), f
        assert (run_dir / "tensorboard").is_dir()


@pytest.fixture(scope="module")
def toy_bundle(toy_runs):
    """One export of the toy runs, with the fine-tuning checkpoints published (converting is most of the cost)."""
    bundle = toy_runs / "bundle"
    crack_train(
        "export",
        "--classifier",
        str(toy_runs / "cls"),
        "--segmenter",
        str(toy_runs / "seg"),
        "--out",
        str(bundle),
        "--version",
        "0.0.1-e2e",
        "--tolerance",
        "1.0",
        "--calibration-images",
        "16",
        "--finetune-dir",
        str(toy_runs / "finetune"),
        "--classifier-threshold",
        "0.4",
        "--classifier-gate-threshold",
        "0.2",
        "--segmenter-threshold",
        "0.3",
    )
    return bundle


def test_export_writes_a_bundle_the_device_accepts(toy_runs, toy_bundle):
    bundle = toy_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["bundle_version"] == "0.0.1-e2e"
    for role in ("classifier", "segmenter"):
        entry = manifest["models"][role]
        assert entry["input"]["dtype"] == "uint8" and entry["output"]["dtype"] == "uint8"
        assert "validation_int8" in entry["metrics"] and "validation_fp32" in entry["metrics"]
        assert (bundle / entry["reference"]["file"]).is_file()
        assert set(manifest["quantization"][role]) >= {"tolerance"}
    assert len(manifest["golden"]["samples"]) == 4
    classifier = manifest["models"]["classifier"]
    assert classifier["threshold"] == 0.4 and classifier["gate_threshold"] == 0.2
    assert "gate_threshold" not in manifest["models"]["segmenter"]
    out = run(
        "-m",
        "edge.cli",
        "infer",
        "--bundle",
        str(bundle),
        "--segment",
        "always",
        "--json",
        str(toy_runs / "synth" / "images"),
    )
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 36 and all(r["segmented"] for r in rows)


def test_interrupted_training_resumes_from_the_last_epoch(tmp_path):
    import keras

    from trainer.models.architectures import SegmenterSpec, build_segmenter
    from trainer.training.train import TrainConfig, train_segmenter

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    y = (rng.random((16, 32, 32)) < 0.05).astype(np.uint8)
    cfg = TrainConfig(epochs=3, batch_size=8, verbose=0)
    spec = SegmenterSpec(size=32, base=4, depth=2)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_segmenter(build_segmenter(spec), (x, y), (x, y), cfg, tmp_path, extra_callbacks=[Interrupt()])
    assert (tmp_path / "backup").is_dir()
    train_segmenter(build_segmenter(spec), (x, y), (x, y), cfg, tmp_path)
    with open(tmp_path / "log.csv") as log_csv:
        epochs = [int(row["epoch"]) for row in csv.DictReader(log_csv)]
    assert epochs == [0, 1, 2]  # epoch 2 ran after the restart; 0 and 1 were not repeated
    assert not (tmp_path / "backup").exists()  # a finished run clears its resume state


def test_export_refuses_a_model_with_float_only_ops():
    import keras

    from trainer.export.convert import ExportError, convert_int8

    inp = keras.Input((8, 8, 3))
    out = keras.layers.Lambda(lambda t: keras.ops.sin(t))(inp)  # no integer SIN kernel exists
    model = keras.Model(inp, out, name="has_sin")
    calib = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ExportError, match="has_sin: cannot be converted to full-integer INT8"):
        convert_int8(model, calib)


def test_cli_error_for_an_empty_dataset_is_one_line(tmp_path, capsys):
    """In this process (TensorFlow is loaded already): a subprocess would spend its time importing it."""
    from trainer.cli import main

    (tmp_path / "positive").mkdir()
    (tmp_path / "negative").mkdir()
    assert main(["classifier", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "empty" in err.strip().splitlines()[-1]


def test_a_site_adapts_the_segmenter_and_exports_it_beside_the_kept_classifier(toy_runs, toy_bundle, capfd):
    """The few-shot path: fine-tuning checkpoints published at export, adapt on a site's labelled images (held-out
    share, threshold, report), export with the other model kept, the base's threshold and provenance recorded."""
    bundle, finetune = toy_bundle, toy_runs / "finetune"
    meta = json.loads((finetune / "segmenter.json").read_text())
    assert meta["kind"] == "segmenter" and meta["model_size"] == "fast"
    site = toy_runs / "line-7"
    crack_train("synth", "--out", str(site), "--n", "20", "--size", "64", "--seed", "9")
    capfd.readouterr()
    crack_train(
        "adapt",
        "--base",
        str(finetune / "segmenter.keras"),
        "--data",
        str(site),
        "--out",
        str(toy_runs / "adapted"),
        "--epochs",
        "2",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "4",
        "--domain",
        "8",
        "--crop",
        "32",
        "--forgetting-set",
        str(site),  # stands in for a leave-one-out source: the scoring, table and summary line are what is tested
        "--forgetting-images",
        "3",
    )
    said = capfd.readouterr().out
    report = json.loads((toy_runs / "adapted" / "adapt.json").read_text())
    (forgot,) = report["forgetting"]["sets"]
    assert forgot["name"] == "line-7" and forgot["images"] == 3 and report["forgetting"]["limit"] == 0.02
    assert forgot["before"]["threshold"] == report["before"]["threshold"]
    assert forgot["after"]["threshold"] == report["after"]["threshold"]
    f1s = forgot["before"]["tolerant_f1"], forgot["after"]["tolerant_f1"]
    assert f"forgetting (tolerant F1 on other data, each model at its threshold): line-7 {f1s[0]:.3f} -> " in said
    assert forgot["forgot"] == (forgot["delta"] < -0.02) == ("drop over 0.02" in said)
    assert "| line-7 | 3 |" in (toy_runs / "adapted" / "ADAPT.md").read_text()
    assert report["images"]["trained_on"] + report["images"]["held_out"] == 20 == report["site"]["images"]
    assert f"trained on {report['images']['trained_on']}" in said and f"held out {report['images']['held_out']}" in said
    assert f"ran all 2 epochs; kept epoch {report['kept_epoch']}" in said
    before, after = report["before"]["tolerant_f1"], report["after"]["tolerant_f1"]
    assert f"tolerant F1 {before:.3f} -> {after:.3f}" in said and "pixel threshold" in said
    assert (toy_runs / "adapted" / "ADAPT.md").is_file() and (toy_runs / "adapted" / "adapt_overlays.png").is_file()
    run_meta = json.loads((toy_runs / "adapted" / "run.json").read_text())
    assert run_meta["initial_weights"] == str(finetune / "segmenter.keras")

    def export(run: str, out: str, *extra: str) -> int:
        from trainer.cli import main

        args = ["export", "--segmenter", str(toy_runs / run), "--keep-from", str(bundle), "--out", str(toy_runs / out)]
        return main([*args, "--version", out, "--tolerance", "1.0", "--calibration-images", "8", *extra])

    assert export("adapted", "bundle-site", "--force") == 0
    printed = capfd.readouterr().out
    assert f"segmenter: threshold {report['threshold']:.2f}" in printed and "TensorSpec" not in printed
    assert len(printed.splitlines()) < 15
    adapted = toy_runs / "bundle-site"
    text = (adapted / "manifest.json").read_text()
    base_m, site_m = json.loads((bundle / "manifest.json").read_text()), json.loads(text)
    assert str(toy_runs) not in text  # no path of the training host goes to the devices
    assert site_m["data"]["site"]["name"] == "line-7" and site_m["data"]["site"]["images"] == 20
    assert len(site_m["data"]["site"]["sha256"]) == 64
    assert site_m["data"]["base"]["bundle_version"] == "0.0.1-e2e"
    assert site_m["data"]["base"]["manifest_sha256"] == sha256_file(bundle / "manifest.json")
    assert site_m["models"]["classifier"]["sha256"] == base_m["models"]["classifier"]["sha256"]  # kept, byte for byte
    assert (
        site_m["models"]["classifier"]["threshold"] == 0.4 and site_m["models"]["classifier"]["gate_threshold"] == 0.2
    )
    assert site_m["models"]["segmenter"]["sha256"] != base_m["models"]["segmenter"]["sha256"]
    assert site_m["models"]["segmenter"]["threshold"] == report["threshold"]  # chosen on the held-out site images
    compared = site_m["models"]["segmenter"]["metrics"]["site_heldout"]
    assert compared["images"] == report["images"]["held_out"] and compared["scored_in"] == "INT8"
    out = run(
        "-m", "edge.cli", "infer", "--bundle", str(adapted), "--segment", "always", "--json", str(site / "images")
    )
    assert len(out.stdout.splitlines()) == 20

    # A run without a threshold of its own takes the base bundle's (0.3 here), not 0.5.
    assert export("seg", "bundle-retrained") == 0
    retrained = json.loads((toy_runs / "bundle-retrained" / "manifest.json").read_text())
    assert retrained["models"]["segmenter"]["threshold"] == 0.3

    # Worse than the base on the held-out site images: refused without --force. The base marks every pixel
    # (threshold 0.01: some crack pixels found), the site bundle none (0.99: a toy model is never that sure).
    shutil.copytree(bundle, toy_runs / "bundle-eager")
    eager = json.loads((bundle / "manifest.json").read_text())
    eager["models"]["segmenter"]["threshold"] = 0.01
    (toy_runs / "bundle-eager" / "manifest.json").write_text(json.dumps(eager))
    bundle = toy_runs / "bundle-eager"
    capfd.readouterr()
    assert export("adapted", "bundle-refused", "--segmenter-threshold", "0.99") == 2
    assert "worse than its base" in capfd.readouterr().err and not (toy_runs / "bundle-refused").exists()


def test_adapt_chooses_the_classifier_gate_on_the_held_out_site_images_and_export_records_it(
    toy_runs, toy_bundle, capfd
):
    """A classifier adapted to a site holds out the images a segmenter adapted there holds out, chooses its gate on
    their samples (recall >= 0.98 of the cracked ones, as crossval does) and export writes it as gate_threshold."""
    import keras

    from trainer.data.assemble import image_parts, source_image
    from trainer.data.datasets import segmentation_pairs
    from trainer.evaluation.classifier_adaptation import heldout_samples

    site, run = toy_runs / "line-9", toy_runs / "adapted-cls"
    crack_train("synth", "--out", str(site), "--n", "20", "--size", "64", "--seed", "11")
    capfd.readouterr()
    crack_train(
        "adapt", "--base", str(toy_runs / "finetune" / "classifier.keras"), "--data", str(site), "--out", str(run),
        "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--domain", "8",
    )  # fmt: skip
    said = capfd.readouterr().out
    report = json.loads((run / "adapt.json").read_text())
    c = report["classifier"]
    images = [str(p) for p, _ in segmentation_pairs(site)]
    parts = image_parts(images, 0)  # the segmenter's split of the site (adapt's default seed 0)
    heldout = sorted(p for p in images if parts[p] != "train")
    assert sorted(f"line-9/{p.split('/')[-1]}" for p in heldout) == sorted(report["images"]["held_out_files"])
    trained = {source_image(p) for files in json.loads((run / "splits.json").read_text())["files"].values()
               for p in files.get("train", [])}  # fmt: skip
    assert trained and not trained & set(heldout)  # no patch of a held-out image was trained on
    x, y = heldout_samples(heldout, 32, 0, 8)
    assert c["samples"] == len(y) and c["cracked"] == int(y.sum()) > 0
    scores = keras.models.load_model(run / "best.keras", compile=False).predict(x.astype("float32"), verbose=0)[:, 0]
    assert c["after"]["met"] and (scores[y == 1] >= c["gate_threshold"]).mean() >= 0.98
    assert c["after"]["recall"] >= 0.98 and c["before"]["gate_threshold"] is not None
    assert f"gate threshold {c['gate_threshold']:.2f} chosen on them" in said and "balanced accuracy" in said
    assert "## Classifier gate" in (run / "ADAPT.md").read_text()

    from trainer.cli import main

    out = toy_runs / "bundle-site-cls"
    assert main(["export", "--classifier", str(run), "--keep-from", str(toy_bundle), "--out", str(out),
                 "--version", "0.0.2-site", "--tolerance", "1.0", "--calibration-images", "8"]) == 0  # fmt: skip
    classifier = json.loads((out / "manifest.json").read_text())["models"]["classifier"]
    assert classifier["gate_threshold"] == c["gate_threshold"]  # the base bundle had 0.2
    assert "held-out labels" in classifier["metrics"]["gate_threshold_source"]
    assert (
        f"classifier: gate threshold {c['gate_threshold']:.2f} (chosen by crack-train adapt" in capfd.readouterr().out
    )
