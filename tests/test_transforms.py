"""Landmarks follow the image: round trips through every transform, and the pixels agree with the points."""

import numpy as np
import pytest
import torch
from imaging import centroid, radiograph
from monai.data import MetaTensor
from monai.transforms import (
    ApplyTransformToPoints,
    CenterSpatialCropd,
    Compose,
    Flipd,
    Randomizable,
    RandSpatialCropd,
    SpatialPadd,
)

from kneel_monai.landmarks import FLIP_PERMUTATION
from kneel_monai.transforms import (
    CropRoi,
    CropRoid,
    FollowAffined,
    RandFlipLandmarksd,
    ResampleToSpacing,
    ResampleToSpacingd,
    SplitHalvesd,
    points_between,
    points_to_mm,
    transform_points,
)


def test_points_to_mm_uses_column_and_row_spacing():
    img = radiograph(spacing=(0.2, 0.15))
    np.testing.assert_allclose(points_to_mm(np.array([[10.0, 20.0]]), img.affine), [[1.5, 4.0]])


def test_transform_points_is_monais_apply_transform_to_points():
    # written out so that inference need not import MONAI: it must stay MONAI's product exactly
    rng = np.random.default_rng(3)
    points = rng.uniform(-50, 500, size=(2, 7, 2))
    points[1, 3] = np.nan
    for _ in range(5):
        matrix = np.eye(3)
        matrix[:2] = rng.normal(size=(2, 3)) * [1, 1, 40]
        ours = transform_points(points, matrix)
        index = torch.as_tensor(points[..., ::-1].reshape(1, -1, 2).copy())  # MONAI's points are (row, col)
        monais = ApplyTransformToPoints(dtype=torch.float64, affine=torch.as_tensor(matrix), invert_affine=False)(index)
        np.testing.assert_allclose(ours, np.asarray(monais).reshape(points.shape)[..., ::-1], rtol=1e-12, atol=1e-9)
        assert np.isnan(ours[1, 3]).all() and ours.dtype == points.dtype
    assert transform_points(torch.zeros(3, 2, dtype=torch.float32), np.eye(3)).dtype == torch.float32
    with pytest.raises(ValueError, match="3×3"):
        transform_points(points, np.eye(4))


def test_stage1_chain_round_trip_and_pixels_agree():
    rng = np.random.default_rng(0)
    right, left = (100.0, 140.0), (330.0, 150.0)
    img = radiograph(blobs=[right, left])
    points = np.array([[right], [left]]) + 0.0  # (2 knees, 1 point, 2)
    extra = rng.uniform([0, 0], [420, 300], size=(2, 5, 2))
    data = {"image": img, "centre": points, "extra": np.concatenate([points, extra], axis=1)}
    chain = Compose([
        ResampleToSpacingd("image", 1.0, point_keys=["centre", "extra"]),
        SplitHalvesd("image", point_keys=["centre", "extra"]),
        FollowAffined(SpatialPadd("image", spatial_size=(80, 80)), "image", ["centre", "extra"]),
        FollowAffined(CenterSpatialCropd("image", roi_size=(64, 64)), "image", ["centre", "extra"]),
    ])
    knees = chain(data)
    assert [k["side"] for k in knees] == ["R", "L"]
    for index, knee in enumerate(knees):
        assert knee["image"].shape == (1, 64, 64)
        # inverse of the whole chain: final pixels → original pixels, through the two affines
        back = points_between(knee["extra"], knee["image"].affine, img.affine)
        np.testing.assert_allclose(back, data["extra"][index], atol=1e-3)
        # and the pixels moved with the points: the blob sits where its point says (1 mm pixels now)
        found = centroid(knee["image"], knee["centre"][0], radius=8)
        np.testing.assert_allclose(found, knee["centre"][0], atol=0.05)


@pytest.mark.parametrize("mirror", [False, True])
def test_crop_roi_centres_the_knee_and_inverts(mirror):
    centre = (201.3, 148.7)
    img = radiograph(blobs=[centre, (240.0, 160.0)])
    crop = CropRoi(size_mm=30.0, spacing_mm=0.3)
    roi = crop(img, centre, mirror=mirror)
    n = crop.size_px
    assert roi.shape == (1, n, n) == (1, 100, 100)
    mapped = points_between(np.array([centre, (240.0, 160.0)]), img.affine, roi.affine)
    np.testing.assert_allclose(mapped[0], [(n - 1) / 2, (n - 1) / 2], atol=1e-9)
    # the second blob is to the right of the centre in the image: mirrored, it is to the left
    assert (mapped[1, 0] < (n - 1) / 2) == mirror
    np.testing.assert_allclose(centroid(roi, mapped[0], radius=12), mapped[0], atol=0.05)
    np.testing.assert_allclose(centroid(roi, mapped[1], radius=12), mapped[1], atol=0.05)
    back = points_between(mapped, roi.affine, img.affine)
    np.testing.assert_allclose(back, [centre, (240.0, 160.0)], atol=1e-3)


def test_crop_roi_pads_with_zeros_outside_the_image():
    img = radiograph(blobs=[(5.0, 5.0)])
    img = img + 1.0  # a bright image: zeros can only come from padding
    roi = CropRoi(size_mm=20.0, spacing_mm=0.5)(img, (0.0, 0.0))
    a = np.asarray(roi)[0]
    assert a[0, 0] == 0 and a[-1, -1] > 0.9  # top-left outside, bottom-right inside


def test_crop_roid_flips_left_knee_to_right_without_reordering_ids():
    rng = np.random.default_rng(1)
    pts = rng.uniform(100, 200, size=(16, 2))
    pts[4] = (150.0, 150.0)
    img = radiograph()
    out = {}
    for side in ("R", "L"):
        d = CropRoid("image", centre_key="landmarks", centre_id=4, size_mm=40.0, spacing_mm=0.3,
                     point_keys="landmarks")({"image": img, "landmarks": pts.copy(), "side": side})
        out[side] = d["landmarks"]
        np.testing.assert_allclose(d["landmarks"][4], [66.0, 66.0], atol=1e-9)  # (133 - 1) / 2
    # mirrored about the ROI centre column, same ids
    np.testing.assert_allclose(out["L"][:, 0], 132.0 - out["R"][:, 0], atol=1e-9)
    np.testing.assert_allclose(out["L"][:, 1], out["R"][:, 1], atol=1e-9)


@pytest.mark.parametrize("transform", [
    FollowAffined(Flipd("image", spatial_axis=1), "image", "landmarks"),
    FollowAffined(Flipd("image", spatial_axis=0), "image", "landmarks"),
    FollowAffined(RandSpatialCropd("image", roi_size=(200, 250), random_size=False), "image", "landmarks"),
    FollowAffined(SpatialPadd("image", spatial_size=(330, 500)), "image", "landmarks"),
    ResampleToSpacingd("image", 0.37, point_keys="landmarks"),
])
def test_monai_and_own_transforms_move_pixels_and_points_together(transform):
    blobs = [(200.4, 150.2), (260.7, 120.9)]
    img = radiograph(blobs=blobs)
    if isinstance(transform, Randomizable):  # MONAI's random transforms; the others are deterministic
        transform.set_random_state(3)
    out = transform({"image": img, "landmarks": np.array(blobs)})
    spacing = float(torch.linalg.norm(out["image"].affine[:2, 1]))
    for point in out["landmarks"]:
        radius = 20 * 0.15 / spacing
        np.testing.assert_allclose(centroid(out["image"], point, radius), point, atol=0.05)
    back = points_between(out["landmarks"], out["image"].affine, img.affine)
    np.testing.assert_allclose(back, blobs, atol=1e-3)


def test_augmentation_flip_reorders_ids_and_twice_is_identity():
    rng = np.random.default_rng(2)
    pts = rng.uniform(20, 200, size=(16, 2))
    img = radiograph()
    flip = RandFlipLandmarksd("image", "landmarks", prob=1.0)
    once = flip({"image": img, "landmarks": pts})
    # id 0 now holds what was id 8, mirrored: x → W - 1 - x
    np.testing.assert_allclose(once["landmarks"][0], [419 - pts[8, 0], pts[8, 1]], atol=1e-9)
    np.testing.assert_allclose(once["landmarks"], np.stack([419 - pts[:, 0], pts[:, 1]], 1)[FLIP_PERMUTATION],
                               atol=1e-9)
    twice = flip(once)
    np.testing.assert_allclose(twice["landmarks"], pts, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(twice["image"]), np.asarray(img))
    never = RandFlipLandmarksd("image", "landmarks", prob=0.0)({"image": img, "landmarks": pts})
    np.testing.assert_array_equal(never["landmarks"], pts)


def test_random_round_trips_through_resample_and_roi():
    rng = np.random.default_rng(5)
    img = radiograph(h=200, w=260, spacing=(0.17, 0.14))
    for _ in range(20):
        pts = rng.uniform([0, 0], [260, 200], size=(16, 2))
        centre = rng.uniform([50, 50], [210, 150])
        a = ResampleToSpacing(rng.uniform(0.1, 1.2))(img)
        b = CropRoi(size_mm=rng.uniform(10, 40), spacing_mm=rng.uniform(0.2, 0.5))(
            a, points_between(centre[None], img.affine, a.affine)[0], mirror=bool(rng.integers(2)))
        there = points_between(pts, img.affine, b.affine)
        back = points_between(there, b.affine, img.affine)
        np.testing.assert_allclose(back, pts, atol=1e-3)


def test_clear_errors():
    with pytest.raises(ValueError, match="MetaTensor"):
        ResampleToSpacing(1.0)(torch.zeros(1, 10, 10))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        CropRoi()(MetaTensor(torch.zeros(10, 10)), (1, 1))
    with pytest.raises(ValueError, match="finite"):
        CropRoi()(radiograph(), (float("nan"), 3.0))
    with pytest.raises(ValueError, match=r"\(2, N, 2\)"):
        SplitHalvesd("image", point_keys="p")({"image": radiograph(), "p": np.zeros((3, 1, 2))})
    with pytest.raises(KeyError, match="landmarks"):
        ResampleToSpacingd("image", 1.0, point_keys="landmarks")({"image": radiograph()})
    with pytest.raises(ValueError, match="side"):
        CropRoid("image", centre_key="c")({"image": radiograph(), "c": (5.0, 5.0), "side": "left"})
