"""Augmentations of method.md §4: the warp moves pixels and points together; the others behave as stated."""

import numpy as np
import pytest
import torch
from imaging import centroid, radiograph
from monai.data import MetaTensor

from kneel_monai.transforms import (
    RandCutoutd,
    RandKneelIntensityd,
    RandLandmarkWarpd,
    RandTargetJitterd,
    points_between,
)


@pytest.mark.parametrize("seed", range(6))
def test_warp_moves_pixels_and_points_together(seed):
    blobs = [(190.0, 150.0), (240.0, 130.0), (170.0, 170.0)]
    img = radiograph(blobs=blobs)
    warp = RandLandmarkWarpd("image", "landmarks", prob=1.0, scale_range=(0.9, 1.1), extra_scale_prob=0.0,
                             rotate_deg=30, projective=0.05)
    warp.set_random_state(seed)
    out = warp({"image": img, "landmarks": np.array(blobs)})
    assert out["image"].shape == img.shape
    for p in out["landmarks"]:
        np.testing.assert_allclose(centroid(out["image"], p, radius=14), p, atol=0.15)
    if not out["image"].meta.get("projective_warp"):
        # an affine warp also updates the image affine, so later transforms keep points exact
        via_affine = points_between(np.array(blobs), img.affine, out["image"].affine)
        np.testing.assert_allclose(via_affine, out["landmarks"], atol=1e-6)


def test_warp_is_reproducible_and_draws_projective_sometimes():
    img = radiograph()
    pts = np.array([[10.0, 20.0]])
    a = RandLandmarkWarpd(prob=1.0).set_random_state(7)
    b = RandLandmarkWarpd(prob=1.0).set_random_state(7)
    np.testing.assert_array_equal(a({"image": img, "landmarks": pts})["landmarks"],
                                  b({"image": img, "landmarks": pts})["landmarks"])
    kinds = set()
    for _ in range(20):
        kinds.add(bool(a({"image": img, "landmarks": pts})["image"].meta.get("projective_warp")))
    assert kinds == {True, False}
    off = RandLandmarkWarpd(prob=0.0)({"image": img, "landmarks": pts})
    assert off["image"] is img


def test_cutout_zeros_one_square_of_ten_percent():
    img = radiograph(h=200, w=300) + 0.5
    cut = RandCutoutd("image", size_fraction=0.1, prob=1.0).set_random_state(0)
    out = cut({"image": img})
    zeros = np.argwhere(np.asarray(out["image"])[0] == 0)
    assert len(zeros) == 20 * 20
    assert np.ptp(zeros[:, 0]) == 19 and np.ptp(zeros[:, 1]) == 19
    assert RandCutoutd("image", prob=0.0)({"image": img})["image"] is img


@pytest.mark.parametrize("choice", RandKneelIntensityd.CHOICES)
def test_intensity_choices(choice):
    img = radiograph(blobs=[(100.0, 100.0)]) * 0.8 + 0.1
    aug = RandKneelIntensityd("image", gamma_prob=0.0).set_random_state(0)
    for seed in range(60):  # find a draw of this choice
        aug.set_random_state(seed)
        out = aug({"image": img})
        if aug.choice == choice:
            break
    assert aug.choice == choice
    x, y = np.asarray(img)[0], np.asarray(out["image"])[0]
    assert y.min() >= 0 and y.max() <= 1 and isinstance(out["image"], MetaTensor)
    torch.testing.assert_close(out["image"].affine, img.affine)
    if choice == "none":
        np.testing.assert_allclose(y, x, atol=1e-6)
    elif choice == "salt_pepper":
        changed = np.abs(y - x) > 1e-6
        assert 0.002 < changed.mean() < 0.03 and set(np.unique(y[changed])) <= {0.0, 1.0}
    elif choice in ("gaussian_blur", "median_blur"):
        assert np.abs(np.diff(y, axis=1)).max() <= np.abs(np.diff(x, axis=1)).max() + 1e-6
        assert np.abs(y - x).max() > 1e-4
    else:
        assert 0.01 < np.std(y - x) < 0.05


def test_median_blur_removes_salt_and_pepper():
    x = torch.full((1, 40, 40), 0.5)
    x[0, 10, 10], x[0, 20, 30] = 1.0, 0.0
    y = RandKneelIntensityd._median(x, 3)
    torch.testing.assert_close(y, torch.full((1, 40, 40), 0.5))


def test_gamma_and_target_jitter():
    img = MetaTensor(torch.full((1, 8, 8), 0.25), affine=torch.eye(3, dtype=torch.float64))
    aug = RandKneelIntensityd("image", gamma_prob=1.0, gamma_range=(2.0, 2.0))
    for seed in range(60):
        aug.set_random_state(seed)
        out = aug({"image": img})
        if aug.choice == "none":
            break
    np.testing.assert_allclose(np.asarray(out["image"]), 0.0625, atol=1e-7)
    pts = np.zeros((1000, 2))
    jittered = RandTargetJitterd("landmarks", max_px=1.0).set_random_state(0)({"landmarks": pts})["landmarks"]
    assert np.abs(jittered).max() <= 1.0 and abs(jittered.mean()) < 0.05 and jittered.std() > 0.5
