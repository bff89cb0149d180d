"""The training pipeline shared by every Keras backend: augmented batches, the time budget, the full-resolution head,
manufactured parts as negatives, and `--prepare-only`."""

import json

import cv2
import keras
import numpy as np
import pytest

from trainer.data import domain
from trainer.models.architectures import SEGMENTER_SIZES, SegmenterSpec, build_segmenter
from trainer.training.train import Batches, TimeBudget


def crack_images(n=6, size=32):
    """Images whose crack pixels are exactly the masked ones (value 10, elsewhere 200)."""
    rng = np.random.default_rng(3)
    masks = (rng.random((n, size, size)) < 0.1).astype(np.uint8)
    images = np.where(masks[..., None] > 0, 10, 200).astype(np.uint8).repeat(3, axis=-1)
    return images, masks


def test_augmented_masks_follow_their_images_through_flips_rotations_and_crops():
    images, masks = crack_images()
    batches = Batches(images, masks, batch=4, seed=1, training=True, masks=True, crop=24, steps=5)
    for i in range(len(batches)):
        x, y = batches[i]
        assert x.shape == (4, 24, 24, 3) and y.shape == (4, 24, 24, 1)
        # Brightness and contrast move both levels, but crack pixels stay darker than every surface pixel.
        for image, mask in zip(x[..., 0], y[..., 0]):
            if mask.any() and (mask == 0).any():
                assert image[mask > 0].max() < image[mask == 0].min()


def test_batches_are_reproducible_by_seed_and_differ_between_epochs():
    images, masks = crack_images()
    first = Batches(images, masks, batch=3, seed=7, training=True, masks=True, crop=16, steps=2)
    again = Batches(images, masks, batch=3, seed=7, training=True, masks=True, crop=16, steps=2)
    np.testing.assert_array_equal(first[1][0], again[1][0])
    before = first[1][0].copy()
    first.on_epoch_end()
    assert not np.array_equal(before, first[1][0])


def test_validation_batches_are_the_images_unchanged_and_class_weights_become_sample_weights():
    images, _ = crack_images()
    labels = np.array([0, 1, 1, 0, 1, 1])
    val = Batches(images, labels, batch=4, seed=0, training=False, masks=False)
    assert len(val) == 2
    np.testing.assert_array_equal(val[0][0], images[:4].astype(np.float32))
    train = Batches(images, labels, batch=6, seed=0, training=True, masks=False, class_weights={0: 1.5, 1: 0.75})
    _x, y, w = train[0]
    np.testing.assert_array_equal(w, np.where(y[:, 0] > 0.5, 0.75, 1.5))


def test_a_time_budget_stops_training_after_the_epoch_that_would_overrun_it():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    budget = TimeBudget(minutes=0.0)  # any epoch overruns it
    history = model.fit(np.zeros((8, 2)), np.zeros((8, 1)), epochs=5, verbose=0, callbacks=[budget])
    assert budget.stopped_after == 1 and len(history.history["loss"]) == 1


def test_the_full_resolution_head_keeps_the_output_size_and_adds_only_a_few_parameters():
    fine, plain = SEGMENTER_SIZES["fast-fine"], SEGMENTER_SIZES["fast"]
    assert fine.fine_head and fine.stem_stride == 2
    with_head = build_segmenter(SegmenterSpec(size=64, base=fine.base, stem_stride=2, fine_head=fine.fine_head))
    without = build_segmenter(SegmenterSpec(size=64, base=plain.base, stem_stride=2))
    assert with_head.output_shape == without.output_shape == (None, 64, 64, 1)
    assert 0 < with_head.count_params() - without.count_params() < 2000
    assert "full-resolution head" in fine.as_dict()["architecture"]


def test_manufactured_parts_keep_cracks_on_the_part_and_edges_out_of_the_mask():
    rng = np.random.default_rng(11)
    for _ in range(10):
        image, region = domain.manufactured_part(rng, 96)
        assert image.shape == (96, 96, 3) and region.dtype == np.uint8 and set(np.unique(region)) <= {0, 1}
    cfg = domain.DomainConfig(part_probability=1.0, crack_probability=1.0, hard_negative_probability=0.0)
    for seed in range(6):
        # The same draws twice: once as generated, once to see the part's body the crack was clipped to.
        image, mask = domain.rendered_sample(None, 96, np.random.default_rng(seed), cfg, real_background=False)
        probe = np.random.default_rng(seed)
        probe.random()  # the part/surface choice
        _, region = domain.manufactured_part(probe, 96)
        assert not (mask & (1 - region)).any(), "a crack pixel outside the part's body"


def test_hairline_samples_are_thin_shallow_cracks_with_exact_masks():
    cfg = domain.DomainConfig(part_probability=0.0, crack_probability=1.0, hard_negative_probability=0.0,
                              hairline_probability=1.0)  # fmt: skip
    widths = []
    for seed in range(8):
        _image, mask = domain.rendered_sample(None, 96, np.random.default_rng(seed), cfg, real_background=False)
        assert mask.any()
        # A hairline mask is thin: eroding it by a 3x3 cross leaves almost nothing of a 1-3 px line.
        widths.append(cv2.erode(mask, np.ones((3, 3), np.uint8)).sum() / mask.sum())
    assert np.mean(widths) < 0.35


def test_the_hard_preset_weighs_parts_hairlines_and_look_alikes_more():
    hard, default = domain.DOMAIN_PRESETS["hard"], domain.DOMAIN_PRESETS["default"]
    assert hard.part_probability > default.part_probability
    assert hard.hairline_probability > default.hairline_probability
    assert hard.hard_negative_probability > default.hard_negative_probability


@pytest.mark.parametrize("kind", ["segmenter", "classifier"])
def test_prepare_only_writes_the_run_files_and_trains_nothing(tmp_path, kind):
    from trainer.cli import main

    run = tmp_path / "run"
    extra = ["--size", "64"] if kind == "segmenter" else ["--size", "32"]
    assert main([kind, "--synth", "12", "--out", str(run), "--prepare-only", *extra]) == 0
    assert {p.name for p in run.iterdir()} == {"run.json", "splits.json", "heldout.npz"}
    assert json.loads((run / "run.json").read_text())["kind"] == kind
