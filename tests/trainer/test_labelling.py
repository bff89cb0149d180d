"""`crack-train label`: a site's frames out to CVAT / Label Studio with crackd's masks drawn in, and the corrected
masks back into SITE/masks.

The tools' exports are written here as the tools write them (CVAT: Datumaro's Segmentation mask 1.1 layout, its
labelmap colours taken from the task's labels; Label Studio: the JSON export with brush RLE drawn in RGBA with
anti-aliased edges), with a mask changed as a person would, and read back through the command line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import REPO
from tests.helpers.without_tensorflow import env
from trainer.labelling import brush_rle, cvat, labelstudio
from trainer.labelling.site import LabelFileError, site_frames

H, W = 48, 64


def crack_train(*args: str) -> subprocess.CompletedProcess:
    """crack-train as a user runs it, where TensorFlow cannot be imported (labelling must not need it)."""
    return subprocess.run(
        [sys.executable, "-m", "trainer.cli", *map(str, args)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def one_line_error(run: subprocess.CompletedProcess, *expected: str) -> None:
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    for text in expected:
        assert text in run.stderr, run.stderr


def crack(row: int, col0: int = 4, col1: int = 60, width: int = 2) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[row : row + width, col0:col1] = 1
    return mask


@pytest.fixture
def site(tmp_path) -> Path:
    """Three frames; crackd predicted a crack on two (as `crackd infer --mask-dir` writes them: 0/255 PNG)."""
    root = tmp_path / "line3"
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (root / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), rng.integers(0, 255, (H, W, 3), np.uint8))
    (root / "predicted").mkdir()
    predicted = {"a": crack(10) | crack(30, 40, 44, 10), "b": crack(20)}
    for name, mask in predicted.items():
        cv2.imwrite(str(root / "predicted" / f"{name}.png"), mask * 255)
    return root


def masks_of(site: Path) -> dict[str, np.ndarray]:
    return {p.stem: (cv2.imread(str(p), cv2.IMREAD_UNCHANGED) > 0).astype(np.uint8) for p in (site / "masks").iterdir()}


# ----------------------------------------------------------------------------------------- Label Studio brush RLE


def test_brush_rle_of_a_small_mask_is_the_code_derived_by_hand():
    # 2x2 mask [[0, 255], [255, 255]] as RGBA: 4 x 0 then 12 x 255.
    # header: 32 bits count 16 | 5 bits word size-1 = 7 | 4 x 4 bits field sizes-1 = 2, 3, 7, 15
    # run 4 x 0:    1 (repeat) 00 (3-bit field) 011 (4-1) 00000000
    # run 12 x 255: 1 (repeat) 01 (4-bit field) 1011 (12-1) 11111111, then 6 zero bits to the byte
    code = [0, 0, 0, 16, 57, 27, 252, 96, 22, 255, 192]
    mask = np.array([[0, 255], [255, 255]], np.uint8)
    assert brush_rle.mask_to_rle(mask) == code
    assert brush_rle.rle_to_mask(code, 2, 2).tolist() == [[0, 1], [1, 1]]


def test_brush_rle_literal_runs_decode_as_label_studio_writes_them():
    # [5, 7, 7]: a literal run of one word (0 00 000 00000101), then 2 x 7 (1 00 001 00000111), 7 zero bits
    code = [0, 0, 0, 3, 57, 27, 248, 0, 176, 131, 128]
    assert brush_rle.decode(code).tolist() == [5, 7, 7]
    assert brush_rle.encode(np.array([5, 7, 7])) == code


def test_brush_rle_round_trips_long_runs_and_any_bytes():
    mask = np.zeros((300, 300), np.uint8)  # 360000 values: runs longer than the 16-bit field
    mask[150, 10:290] = 1
    assert np.array_equal(brush_rle.rle_to_mask(brush_rle.mask_to_rle(mask), 300, 300), mask)
    values = np.random.default_rng(1).integers(0, 3, 5000).astype(np.uint8)
    assert np.array_equal(brush_rle.decode(brush_rle.encode(values)), values)


def test_a_cut_or_mis_sized_brush_rle_is_refused_saying_why():
    code = brush_rle.mask_to_rle(crack(10))
    with pytest.raises(brush_rle.BrushRleError, match="truncated"):
        brush_rle.decode(code[: len(code) // 2])
    with pytest.raises(brush_rle.BrushRleError, match="image of another size"):
        brush_rle.rle_to_mask(code, H, W + 1)


# ------------------------------------------------------------------------------------------------------- CVAT


def test_the_cvat_task_has_the_segmentation_mask_1_1_layout_with_the_predictions_drawn(site, tmp_path):
    out = tmp_path / "task.zip"
    assert "2 with crackd's predicted masks" in ok(
        crack_train("label", "export", "--format", "cvat", site, "--out", out)
    )
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        assert names == {
            "labelmap.txt",
            "ImageSets/Segmentation/default.txt",
            *(f"JPEGImages/{s}.jpg" for s in "abc"),
            *(f"{d}/{s}.png" for d in ("SegmentationClass", "SegmentationObject") for s in "ab"),
        }
        assert archive.read("labelmap.txt").decode().splitlines() == [
            "# label:color_rgb:parts:actions",
            "background:0,0,0::",
            "crack:255,0,0::",
        ]
        assert archive.read("ImageSets/Segmentation/default.txt").decode().split() == ["a", "b", "c"]
        painted = cv2.cvtColor(
            cv2.imdecode(np.frombuffer(archive.read("SegmentationClass/a.png"), np.uint8), cv2.IMREAD_COLOR),
            cv2.COLOR_BGR2RGB,
        )
        objects = cv2.cvtColor(
            cv2.imdecode(np.frombuffer(archive.read("SegmentationObject/a.png"), np.uint8), cv2.IMREAD_COLOR),
            cv2.COLOR_BGR2RGB,
        )
    expected = crack(10) | crack(30, 40, 44, 10)
    assert np.array_equal(np.all(painted == (255, 0, 0), axis=2), expected.astype(bool))
    assert np.array_equal(np.all(painted == (0, 0, 0), axis=2), ~expected.astype(bool))
    # two separate cracks: two objects in the Pascal VOC instance palette (1: 128,0,0; 2: 0,128,0)
    colours = {tuple(c) for c in objects.reshape(-1, 3).tolist()}
    assert colours == {(0, 0, 0), (128, 0, 0), (0, 128, 0)}


def test_the_pascal_voc_palette_matches_its_published_colours():
    assert cvat.voc_colour(1) == (128, 0, 0)
    assert cvat.voc_colour(15) == (192, 128, 128)  # "person"
    assert cvat.voc_colour(255) == (224, 224, 192)  # the "void" border colour


def cvat_export(path: Path, frames: dict[str, np.ndarray | None], crack_colour=(250, 50, 83)) -> Path:
    """A zip as CVAT's Export task dataset > Segmentation mask 1.1 writes it: the task's own label colours, an
    extra label, every frame listed, a PNG only for a frame with something drawn."""
    labels = [("background", (0, 0, 0)), ("crack", crack_colour), ("stain", (51, 221, 255))]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            "labelmap.txt",
            "# label:color_rgb:parts:actions\n" + "".join(f"{n}:{r},{g},{b}::\n" for n, (r, g, b) in labels),
        )
        archive.writestr("ImageSets/Segmentation/default.txt", "".join(f"{s}\n" for s in frames))
        for stem, mask in frames.items():
            if mask is None:
                continue
            rgb = np.zeros((*mask.shape, 3), np.uint8)
            rgb[mask > 0] = crack_colour
            rgb[0:3, 0:3] = labels[2][1]  # a stain: another label, not a crack
            archive.writestr(f"SegmentationClass/{stem}.png", cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes())
            instances = np.zeros((*mask.shape, 3), np.uint8)
            instances[mask > 0] = (128, 0, 0)
            archive.writestr(f"SegmentationObject/{stem}.png", cv2.imencode(".png", instances[:, :, ::-1])[1].tobytes())
    return path


def test_cvat_corrections_come_back_as_the_site_masks(site, tmp_path):
    ok(crack_train("label", "export", "--format", "cvat", site, "--out", tmp_path / "task.zip"))
    corrected = {"a": crack(10), "b": crack(20) | crack(40), "c": None}  # a: false crack erased; b: one added
    export = cvat_export(tmp_path / "export.zip", corrected)
    out = ok(crack_train("label", "import", export, site))
    assert "wrote 3 masks" in out and "1 crack-free" in out
    masks = masks_of(site)
    assert np.array_equal(masks["a"], crack(10))
    assert np.array_equal(masks["b"], crack(20) | crack(40))
    assert not masks["c"].any()
    assert {p.stem for p in (site / "images").iterdir()} == {"a", "b", "c"}


def test_an_image_the_site_lacks_is_taken_from_a_cvat_export_that_carries_it(tmp_path):
    export = cvat_export(tmp_path / "export.zip", {"new": crack(5)})
    with zipfile.ZipFile(export, "a") as archive:
        archive.writestr("JPEGImages/new.png", cv2.imencode(".png", np.full((H, W, 3), 90, np.uint8))[1].tobytes())
    site = tmp_path / "fresh"
    ok(crack_train("label", "import", export, site))
    assert (site / "images" / "new.png").is_file()
    assert np.array_equal(masks_of(site)["new"], crack(5))


def test_a_cvat_export_that_cannot_be_used_is_named_with_the_reason(site, tmp_path):
    plain = tmp_path / "notes.zip"
    plain.write_text("not a zip")
    one_line_error(crack_train("label", "import", plain, site), f"{plain}: not a zip archive")

    other_label = cvat_export(tmp_path / "other.zip", {"a": crack(10)})
    one_line_error(
        crack_train("label", "import", other_label, site, "--label", "fissure"),
        "has no label 'fissure'",
        "background, crack, stain",
    )

    lossy = tmp_path / "lossy.zip"
    with zipfile.ZipFile(lossy, "w") as archive:
        archive.writestr("labelmap.txt", "background:0,0,0::\ncrack:255,0,0::\n")
        archive.writestr("ImageSets/Segmentation/default.txt", "a\n")
        archive.writestr("SegmentationClass/a.png", cv2.imencode(".png", np.full((H, W, 3), 7, np.uint8))[1].tobytes())
    one_line_error(crack_train("label", "import", lossy, site), "SegmentationClass/a.png", "(7, 7, 7)")

    with pytest.raises(LabelFileError, match=r"labelmap.txt:2: colour '255,0': expected r,g,b"):
        cvat.parse_labelmap("background:0,0,0::\ncrack:255,0::\n", "labelmap.txt")
    with pytest.raises(LabelFileError, match=r"labelmap.txt:1: 'crack:255,0,0': expected name:r,g,b:parts:actions"):
        cvat.parse_labelmap("crack:255,0,0\n", "labelmap.txt")
    assert not (site / "masks").exists()  # nothing written by a refused import


def test_a_mask_of_another_size_than_the_sites_image_is_refused(site, tmp_path):
    export = cvat_export(tmp_path / "export.zip", {"a": np.ones((H * 2, W * 2), np.uint8)})
    one_line_error(crack_train("label", "import", export, site), "the mask of 'a' is 128x96", "64x48")


# ----------------------------------------------------------------------------------------------- Label Studio


def test_label_studio_tasks_carry_the_predictions_as_brush_labels(site, tmp_path):
    out = tmp_path / "tasks.json"
    stdout = ok(crack_train("label", "export", "--format", "labelstudio", site, "--out", out))
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={tmp_path.resolve()}" in stdout
    tasks = json.loads(out.read_text())
    assert [t["data"]["image"] for t in tasks] == [f"/data/local-files/?d=line3/images/{s}.jpg" for s in "abc"]
    assert "predictions" not in tasks[2]  # nothing predicted on c: nothing to correct
    [prediction] = tasks[0]["predictions"]
    [region] = prediction["result"]
    assert prediction["model_version"] == "crackd"
    assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["crack"]
    assert (region["from_name"], region["to_name"]) == ("label", "image")
    assert (region["original_width"], region["original_height"]) == (W, H)
    assert np.array_equal(brush_rle.rle_to_mask(region["value"]["rle"], H, W), crack(10) | crack(30, 40, 44, 10))
    config = out.with_suffix(".xml").read_text()
    assert '<BrushLabels name="label" toName="image">' in config and '<Label value="crack"' in config
    assert '<Image name="image" value="$image"' in config


def painted_rle(mask: np.ndarray) -> list[int]:
    """A mask as Label Studio's brush draws it: the label's colour in RGBA, edges anti-aliased (alpha 100)."""
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[mask > 0] = (255, 0, 0, 255)
    edge = cv2.dilate(mask, np.ones((3, 3), np.uint8)) & (1 - mask)
    rgba[edge > 0] = (255, 0, 0, 100)
    return brush_rle.encode(rgba)


def annotation(mask: np.ndarray, label: str = "crack", **extra) -> dict:
    region = {
        "id": "Xk2Lq9",
        "type": "brushlabels",
        "from_name": "label",
        "to_name": "image",
        "origin": "manual",
        "original_width": mask.shape[1],
        "original_height": mask.shape[0],
        "image_rotation": 0,
        "value": {"format": "rle", "rle": painted_rle(mask), "brushlabels": [label]},
    }
    return {"id": 7, "result": [region], "was_cancelled": False, "ground_truth": False, **extra}


def test_label_studio_corrections_come_back_as_the_site_masks(site, tmp_path):
    tasks_file = tmp_path / "tasks.json"
    ok(crack_train("label", "export", "--format", "labelstudio", site, "--out", tasks_file))
    tasks = json.loads(tasks_file.read_text())
    for n, task in enumerate(tasks, start=1):
        task.update(id=n, project=3)
    tasks[0]["annotations"] = [  # corrected twice: the later one counts
        annotation(crack(10) | crack(30, 40, 44, 10), updated_at="2026-11-30T10:00:00Z"),
        annotation(crack(10), updated_at="2026-11-30T10:05:00Z"),
    ]
    tasks[1]["annotations"] = [{"id": 9, "result": [], "was_cancelled": True}]  # skipped: not labelled
    tasks[2]["annotations"] = [annotation(crack(40))]
    tasks[2]["data"] = {"image": "/data/upload/3/0a1b2c3d-c.jpg"}  # uploaded instead: named by the file
    export = tmp_path / "project-3-at-2026-11-30.json"
    export.write_text(json.dumps(tasks))
    out = ok(crack_train("label", "import", export, site))
    assert "wrote 2 masks" in out
    assert "1 tasks have no finished annotation yet" in out and ": b" in out
    assert "1 images in" in out  # b still has no mask: adapt would refuse the folder, so say it
    masks = masks_of(site)
    assert set(masks) == {"a", "c"}
    assert np.array_equal(masks["a"], crack(10))  # the anti-aliased edge (alpha 100) is not crack
    assert np.array_equal(masks["c"], crack(40))


def test_a_frame_with_a_label_goes_out_with_that_label_not_the_prediction(site, tmp_path):
    (site / "masks").mkdir()
    cv2.imwrite(str(site / "masks" / "b.png"), crack(33) * 255)
    by_stem = {f.stem: f for f in site_frames(site)}
    assert by_stem["b"].source == "masks" and np.array_equal(by_stem["b"].preannotation, crack(33))
    assert by_stem["a"].source == "predicted" and by_stem["c"].source == "none"


def test_a_label_studio_export_that_cannot_be_used_is_named_with_the_reason(site, tmp_path):
    settings = tmp_path / "project.json"
    settings.write_text(json.dumps({"title": "line 3", "label_config": "<View/>"}))
    one_line_error(crack_train("label", "import", settings, site), f"{settings}: expected Label Studio's JSON export")

    wrong_size = tmp_path / "export.json"
    task = {"id": 4, "data": {"image": "/data/local-files/?d=line3/images/a.jpg"}}
    task["annotations"] = [annotation(np.zeros((H, W + 8), np.uint8))]
    task["annotations"][0]["result"][0]["original_width"] = W
    wrong_size.write_text(json.dumps([task]))
    one_line_error(crack_train("label", "import", wrong_size, site), "task 4: result[0]: value.rle", "another size")

    with pytest.raises(LabelFileError, match="not valid JSON"):
        (tmp_path / "cut.json").write_text('[{"data": ')
        labelstudio.read_export(tmp_path / "cut.json")
    assert not (site / "masks").exists()


def test_a_site_without_images_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "task.zip"
    one_line_error(
        crack_train("label", "export", "--format", "cvat", tmp_path / "nowhere", "--out", out), "no images/ folder"
    )
    assert not out.exists()


def test_label_studio_images_can_be_served_from_another_root_or_a_web_server(site, tmp_path):
    out = tmp_path / "tasks.json"
    ok(crack_train("label", "export", "--format", "labelstudio", site, "--out", out, "--document-root", site))
    assert json.loads(out.read_text())[0]["data"]["image"] == "/data/local-files/?d=images/a.jpg"
    prefix = "http://bench:8081/line3/"
    ok(crack_train("label", "export", "--format", "labelstudio", site, "--out", out, "--image-url-prefix", prefix))
    assert json.loads(out.read_text())[1]["data"]["image"] == prefix + "b.jpg"
    one_line_error(
        crack_train(
            "label", "export", "--format", "labelstudio", site, "--out", out, "--document-root", tmp_path / "x"
        ),
        "is not inside it",
    )
