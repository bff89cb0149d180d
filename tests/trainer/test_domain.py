"""Cross-surface training: the tolerant metric, leave-one-dataset-out splits, domain-randomised samples."""

import cv2
import numpy as np
import pytest

from trainer.data import domain
from trainer.export.metrics import tolerant_metrics


def band(h=64, w=64, x=30, width=3):
    m = np.zeros((h, w), np.uint8)
    m[8:56, x : x + width] = 1
    return m


def test_tolerant_f1_counts_an_outline_two_pixels_off_as_right():
    truth = band(x=30)
    shifted = band(x=32)  # every predicted pixel lies within 2 px of a true one, and vice versa
    assert tolerant_metrics(truth[None], shifted[None])["tolerant_f1"] == pytest.approx(1.0)
    far = band(x=40)
    assert tolerant_metrics(truth[None], far[None])["tolerant_f1"] == 0.0


def test_tolerant_precision_and_recall_on_known_masks():
    truth = band(x=10, width=2)  # 96 true pixels
    pred = np.zeros_like(truth)
    pred[8:32, 10:12] = 1  # half of the crack found: 48 pixels, all correct
    pred[8:32, 50:52] = 1  # 48 false pixels far away
    m = tolerant_metrics(truth[None], pred[None])
    assert m["tolerant_precision"] == pytest.approx(0.5)
    # True pixels within 2 px of a prediction: rows 8..31 plus the two rows below (33 and 34 are 2 px away).
    assert m["tolerant_recall"] == pytest.approx((24 + 2) * 2 / 96)
    assert m["tolerant_f1"] == pytest.approx(2 * 0.5 * m["tolerant_recall"] / (0.5 + m["tolerant_recall"]))


def test_tolerant_metrics_pool_pixels_over_images():
    truth = np.stack([band(x=10), np.zeros((64, 64), np.uint8)])
    pred = np.stack([band(x=10), band(x=40)])  # perfect on the first, a false crack on the crack-free second
    m = tolerant_metrics(truth, pred)
    assert m["tolerant_recall"] == 1.0
    assert m["tolerant_precision"] == pytest.approx(0.5)


@pytest.mark.parametrize("width", [1.0, 4.0, 12.0, 30.0])
def test_a_drawn_crack_has_the_requested_width_and_an_exact_mask(width):
    rng = np.random.default_rng(int(width))
    darkness, mask = domain.draw_crack(rng, 224, width)
    assert mask.any()
    assert np.array_equal(darkness > 0, mask > 0), "the mask is the crack's own footprint"
    # Widest inscribed disc of the mask: the crack's widest point (tapering and spalled edges give +-35 %).
    widest = 2 * cv2.distanceTransform(np.pad(mask, 1), cv2.DIST_L2, 5).max()
    assert 0.5 * width <= widest <= 1.5 * width + 2


def test_rendering_darkens_the_crack_and_leaves_the_surface_away_from_it_alone():
    rng = np.random.default_rng(3)
    darkness, mask = domain.draw_crack(rng, 128, 8.0)
    img = np.full((128, 128, 3), 150.0, np.float32)
    domain.render_crack(img, darkness, mask, 8.0, np.random.default_rng(0))
    assert (img[mask > 0] < 150).all()
    far = cv2.dilate(mask, np.ones((9, 9), np.uint8)) == 0
    assert np.allclose(img[far], 150.0, atol=0.01)


def test_randomised_samples_are_deterministic_and_cover_every_kind(tmp_path):
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(3)]
    masks = [band(96, 128, x=20 + 10 * i) for i in range(3)]
    pool = domain.Pool(photos, masks, backgrounds=[rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)])
    a = domain.generate(pool, 24, 64, seed=5)
    b = domain.generate(pool, 24, 64, seed=5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].shape == (24, 64, 64, 3) and a[1].shape == (24, 64, 64)
    has_crack = a[1].reshape(24, -1).any(axis=1)
    assert has_crack.any() and (~has_crack).any(), "both cracked and crack-free samples"
    for surface in domain.SURFACES:
        tex = domain.procedural_surface(np.random.default_rng(1), surface, 48)
        assert tex.shape == (48, 48, 3) and np.isfinite(tex).all()


def test_a_zoomed_out_photograph_becomes_a_mosaic_that_keeps_its_masks():
    img = np.zeros((100, 100, 3), np.uint8)
    m = np.zeros((100, 100), np.uint8)
    m[:, 48:52] = 1
    img[m > 0] = 255
    pool = domain.Pool([img], [m], [])
    canvas, target = domain.rescaled_real(pool, 96, np.random.default_rng(0), zoom=(0.4, 0.4))
    # At zoom 0.4 each tile is ~38 px, so the crack appears in three columns of tiles.
    columns = np.flatnonzero(target.any(axis=0))
    assert len(np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)) == 3
    assert (canvas[target > 0].mean() > 150) and (canvas[target == 0].mean() < 30)


def write_seg_folder(root, n, value):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = np.full((64, 64, 3), value, np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        mask[10:50, 30:33] = 255
        img[mask > 0] = 20
        cv2.imwrite(str(root / "images" / f"{root.name}_{i}.png"), img)
        cv2.imwrite(str(root / "masks" / f"{root.name}_{i}.png"), mask)


def test_leave_one_dataset_out_keeps_every_held_out_image_out_of_training(tmp_path, monkeypatch):
    from trainer.data import assemble

    write_seg_folder(tmp_path / "concrete", 12, 180)
    write_seg_folder(tmp_path / "asphalt", 6, 90)
    used = []
    real_load_pool = domain.load_pool

    def recording_load_pool(pairs, backgrounds, **kw):
        used.extend(p for p, _ in pairs)
        used.extend(backgrounds)
        return real_load_pool(pairs, backgrounds, **kw)

    monkeypatch.setattr(domain, "load_pool", recording_load_pool)
    sp = assemble.segmenter_splits(
        [str(tmp_path / "concrete"), str(tmp_path / "asphalt")], 32, 0, seed=1, holdout=["asphalt"], n_domain=10
    )
    assert set(sp.files["asphalt"]) == {"test"} and len(sp.files["asphalt"]["test"]) == 6
    trained = [p for parts in sp.files.values() for k, ps in parts.items() if k != "test" for p in ps]
    assert trained and not any("asphalt" in p for p in trained)
    assert used and not any("asphalt" in p for p in used), "the randomised samples are made from training files only"
    # No held-out pixel reaches training: every training/validation image is a concrete (bright) image or made from one.
    x, _ = sp.stacked("train")
    assert x.shape[0] == len(sp.files["concrete"]["train"]) + 9
    assert sp.test["asphalt"][0].shape == (6, 32, 32, 3)


def test_balanced_accuracy_averages_the_recall_of_the_classes_present():
    from trainer.export.metrics import binary_metrics

    labels = np.array([1, 1, 1, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.6])  # recall 3/4, specificity 1/2
    assert binary_metrics(labels, scores)["balanced_accuracy"] == pytest.approx((0.75 + 0.5) / 2)
    assert binary_metrics(labels[:4], scores[:4])["balanced_accuracy"] == pytest.approx(0.75)  # cracks only: recall


def test_classification_images_labelled_crack_never_become_backgrounds(tmp_path):
    from trainer.data import assemble

    for label, value in (("positive", 30), ("negative", 200)):
        (tmp_path / "cls" / label).mkdir(parents=True)
        for i in range(10):
            cv2.imwrite(str(tmp_path / "cls" / label / f"{label}_{i}.png"), np.full((40, 40, 3), value, np.uint8))
    sp = assemble.classifier_splits([str(tmp_path / "cls")], 32, 0, seed=0)
    pool = assemble.training_pool(sp)
    assert pool.backgrounds and all(b.mean() == 200 for b in pool.backgrounds)
    trained_negatives = [p for p in sp.files["cls"]["train"] if "negative" in p]
    assert len(pool.backgrounds) == len(trained_negatives)
