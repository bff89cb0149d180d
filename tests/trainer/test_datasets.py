"""Dataset loaders on the layouts people have, including their broken variants."""

import cv2
import numpy as np
import pytest

from edge.sources.synth import SURFACES, generate, write_dataset
from trainer.data.datasets import DatasetError, load_classification, load_segmentation, split_indices


def write_img(path, value=128, size=(40, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), value, np.uint8))


@pytest.mark.parametrize("pos,neg", [("Positive", "Negative"), ("positive", "NEGATIVE"), ("crack", "no_crack")])
def test_classification_folder_names_any_case(tmp_path, pos, neg):
    for i in range(3):
        write_img(tmp_path / pos / f"p{i}.jpg", 40)
        write_img(tmp_path / neg / f"n{i}.png", 200)
    ds = load_classification(tmp_path, size=32)
    assert ds.images.shape == (6, 32, 32, 3)
    assert sorted(ds.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert all(lab == (1 if f"/{pos}/" in p else 0) for p, lab in zip(ds.paths, ds.labels))


def test_corrupt_images_are_skipped_counted_and_listed(tmp_path):
    for i in range(2):
        write_img(tmp_path / "positive" / f"p{i}.jpg")
        write_img(tmp_path / "negative" / f"n{i}.jpg")
    (tmp_path / "negative" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "positive" / "empty.png").write_bytes(b"")
    ds = load_classification(tmp_path, size=16)
    assert len(ds.labels) == 4
    assert len(ds.report.skipped) == 2
    assert "broken.jpg" in ds.report.summary() and "2 skipped" in ds.report.summary()


def test_empty_dataset_folder_is_an_error(tmp_path):
    (tmp_path / "positive").mkdir()
    (tmp_path / "negative").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        load_classification(tmp_path, size=16)


def test_folder_without_class_folders_says_what_is_expected(tmp_path):
    write_img(tmp_path / "img.jpg")
    with pytest.raises(DatasetError, match="positive/ and negative/"):
        load_classification(tmp_path, size=16)


def test_segmentation_pairs_with_masks_of_any_size_and_encoding(tmp_path):
    write_img(tmp_path / "images" / "a.jpg", size=(100, 100))
    write_img(tmp_path / "images" / "b.png", size=(60, 80))
    m255 = np.zeros((100, 100), np.uint8)
    m255[40:60, :] = 255
    m01 = np.zeros((30, 40), np.uint8)
    m01[:, 10:20] = 1  # 0/1 and a different size than its image
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "masks" / "a.png"), m255)
    cv2.imwrite(str(tmp_path / "masks" / "b.png"), m01)
    ds = load_segmentation(tmp_path, size=50)
    assert ds.masks.shape == (2, 50, 50) and set(np.unique(ds.masks)) == {0, 1}
    assert ds.masks[0].mean() == pytest.approx(0.2, abs=0.03)
    assert ds.masks[1].mean() == pytest.approx(0.25, abs=0.05)


def test_mask_without_image_names_the_files(tmp_path):
    write_img(tmp_path / "images" / "a.jpg")
    write_img(tmp_path / "masks" / "a.png")
    write_img(tmp_path / "masks" / "orphan.png")
    write_img(tmp_path / "images" / "lonely.jpg")
    with pytest.raises(DatasetError) as err:
        load_segmentation(tmp_path, size=16)
    assert "masks without an image: orphan.png" in str(err.value) and "images without a mask: lonely.jpg" in str(
        err.value
    )


def test_splits_are_deterministic_by_seed_and_disjoint():
    a_train, a_val = split_indices(100, 0.2, seed=7)
    b_train, b_val = split_indices(100, 0.2, seed=7)
    c_train, _ = split_indices(100, 0.2, seed=8)
    assert (a_train == b_train).all() and (a_val == b_val).all()
    assert not set(a_train) & set(a_val) and len(a_val) == 20
    assert not (a_train == c_train).all()


def test_synthetic_samples_have_exact_ground_truth():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        s = generate(rng, 128, 160, crack_probability=0.5)
        seen.add(s.surface)
        assert s.image.shape == (128, 160, 3) and s.mask.shape == (128, 160)
        assert (s.mask.max() > 0) == (s.n_cracks > 0)
        if s.n_cracks:  # cracks are darker than their surroundings where the mask says so
            assert s.image[s.mask > 0].mean() < s.image[s.mask == 0].mean()
    assert seen == set(SURFACES)


def test_synth_dataset_loads_with_both_loaders(tmp_path):
    write_dataset(tmp_path, 12, seed=1, height=64, width=64)
    seg = load_segmentation(tmp_path, size=32)
    cls = load_classification(tmp_path, size=32)
    assert len(seg.images) == 12 and len(cls.labels) == 12
    has_crack = seg.masks.reshape(12, -1).max(axis=1) > 0
    assert (cls.labels == has_crack).all()


def test_labelled_event_export_is_training_data(tmp_path):
    """The CSV `crackd events export` writes (operators' labels on snapshots) loads as a classification set."""
    import csv

    from edge.cli.events import EXPORT_FIELDS

    snaps = tmp_path / "snapshots"
    for name, value in (("a.jpg", 30), ("b.jpg", 200), ("c.jpg", 90)):
        write_img(snaps / name, value)
    export = tmp_path / "events.csv"
    with export.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=EXPORT_FIELDS)
        writer.writeheader()
        writer.writerow({"id": 1, "uuid": "u1", "label": "crack", "snapshot": str(snaps / "a.jpg")})
        writer.writerow({"id": 2, "uuid": "u2", "label": "no-crack", "snapshot": str(snaps / "b.jpg")})
        writer.writerow({"id": 3, "uuid": "u3", "label": "", "snapshot": str(snaps / "c.jpg")})  # unlabelled: left out
    ds = load_classification(export, size=16)
    assert ds.labels.tolist() == [1, 0]
    assert ds.paths == [str(snaps / "a.jpg"), str(snaps / "b.jpg")]


def test_unusable_pairs_are_skipped_with_the_reason_or_stop_a_strict_load(tmp_path):
    for name in ("good", "tiny", "cut", "wrongmask"):
        write_img(tmp_path / "images" / f"{name}.jpg", size=(1, 1) if name == "tiny" else (64, 64))
        write_img(tmp_path / "masks" / f"{name}.png", size=(32, 48) if name == "wrongmask" else (64, 64))
    cut = tmp_path / "images" / "cut.jpg"
    cut.write_bytes(cut.read_bytes()[:-100])
    ds = load_segmentation(tmp_path, size=32)
    assert ds.paths == [str(tmp_path / "images" / "good.jpg")]
    summary = ds.report.summary()
    assert "3 skipped" in summary and "tiny.jpg: 1x1 pixels" in summary and "cut.jpg: truncated JPEG" in summary
    assert "wrongmask.png: mask is 48x32 but its image is 64x64" in summary
    with pytest.raises(DatasetError, match=r"cut\.jpg: truncated JPEG"):
        load_segmentation(tmp_path, size=32, strict=True)
