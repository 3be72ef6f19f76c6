"""Tests of kneel_monai.metrics on hand-built cases with hand-computed answers."""

from __future__ import annotations

import csv
import math
import re

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from kneel_monai.landmarks import NUM_LANDMARKS
from kneel_monai.metrics import (
    DEFAULT_RADII,
    LandmarkErrorHandler,
    LandmarkErrorMetric,
    cumulative_error_distribution,
    format_table_markdown,
    landmark_errors_mm,
    outlier_rate,
    pck,
    per_kl_breakdown,
    plot_ced,
    release_aggregation,
    release_group_errors,
    resolve_subset,
    write_table_csv,
)

SQRT2 = math.sqrt(2.0)


def _four_knees() -> np.ndarray:
    """(4, 16) errors in mm; every value is exactly representable in binary except 0.6/1.4.

    Model-selection subset: tibia {0, 8}, femur {9, 15}.

    knee  e0   e8   tibia mean | e9    e15   femur mean | other
    0     0.5  1.5  1.0        | 0.25  0.75  0.5        |
    1     1.0  2.0  1.5        | 0.6   1.0   0.8        |
    2     2.0  2.0  2.0        | 0.4   1.4   0.9        |
    3     3.0  2.0  2.5        | 2.0   4.0   3.0        | e5 = 12.0 (outlier, not in the subset)
    """
    e = np.zeros((4, NUM_LANDMARKS))
    e[0, [0, 8, 9, 15]] = [0.5, 1.5, 0.25, 0.75]
    e[1, [0, 8, 9, 15]] = [1.0, 2.0, 0.6, 1.0]
    e[2, [0, 8, 9, 15]] = [2.0, 2.0, 0.4, 1.4]
    e[3, [0, 8, 9, 15]] = [3.0, 2.0, 2.0, 4.0]
    e[3, 5] = 12.0
    return e


# Hand computation for _four_knees(), model-selection subset, radii 1, 1.5, 2, 2.5 mm:
#   tibia group errors [1.0, 1.5, 2.0, 2.5] -> PCK 25, 50, 75, 100   (boundaries count: <=)
#   femur group errors [0.5, 0.8, 0.9, 3.0] -> PCK 75, 75, 75, 75
#   mean over groups: (25+75)/2=50, (50+75)/2=62.5, (75+75)/2=75, (100+75)/2=87.5
#   sample std (ddof=1) of two values a, b is |a-b|/sqrt(2):
#       50/sqrt2 = 35.3553..., 25/sqrt2 = 17.6776..., 0, 25/sqrt2 = 17.6776...
#   outliers: only knee 3 has a landmark (id 5) >= 10 mm -> 1/4 = 25 %
EXPECTED_TIBIA = {1.0: 25.0, 1.5: 50.0, 2.0: 75.0, 2.5: 100.0}
EXPECTED_FEMUR = {1.0: 75.0, 1.5: 75.0, 2.0: 75.0, 2.5: 75.0}
EXPECTED_MEAN = {1.0: 50.0, 1.5: 62.5, 2.0: 75.0, 2.5: 87.5}
EXPECTED_STD = {1.0: 50.0 / SQRT2, 1.5: 25.0 / SQRT2, 2.0: 0.0, 2.5: 25.0 / SQRT2}


def _coords_for(errors: np.ndarray, spacing: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(pred, target) pixel coordinates whose errors at ``spacing`` mm/px are ``errors``.

    Tibial landmarks are displaced along x, femoral along y.
    """
    k, m = errors.shape
    target = np.zeros((k, m, 2))
    target[..., 0] = 40.0 + 3.0 * np.arange(m)
    target[..., 1] = 60.0 + np.arange(k)[:, None]
    pred = target.copy()
    pred[:, :9, 0] += errors[:, :9] / spacing
    pred[:, 9:, 1] -= errors[:, 9:] / spacing
    return pred, target


# ------------------------------------------------------------------ landmark_errors_mm
def test_errors_anisotropic_per_knee_spacing():
    pred = np.zeros((2, 2, 2))
    target = np.zeros((2, 2, 2))
    # knee 0, spacing (x, y) = (0.5, 0.25) mm/px
    pred[0, 0] = [3.0, 8.0]  # (1.5 mm, 2.0 mm) -> 2.5 mm
    pred[0, 1] = [4.0, 0.0]  # (2.0 mm, 0) -> 2.0 mm
    # knee 1, spacing (0.2, 0.1) mm/px
    pred[1, 0] = [0.0, 10.0]  # (0, 1.0 mm) -> 1.0 mm
    pred[1, 1] = [15.0, 20.0]  # (3.0 mm, 2.0 mm) -> sqrt(13) mm
    spacing = np.array([[0.5, 0.25], [0.2, 0.1]])
    err = landmark_errors_mm(pred, target, spacing)
    assert err.shape == (2, 2)
    np.testing.assert_allclose(err, [[2.5, 2.0], [1.0, math.sqrt(13.0)]], rtol=1e-12)
    # swapping x/y spacing changes the answer: knee 0 landmark 0 -> (0.75, 4.0) mm
    err_swapped = landmark_errors_mm(pred, target, spacing[:, ::-1].copy())
    assert err_swapped[0, 0] == pytest.approx(math.hypot(0.75, 4.0))


def test_errors_scalar_and_per_knee_spacing_and_torch_input():
    target = torch.tensor([[[10.0, 10.0]], [[0.0, 0.0]]], dtype=torch.float64)
    pred = target + torch.tensor([[[3.0, 4.0]], [[6.0, 8.0]]], dtype=torch.float64)  # 5 px, 10 px
    np.testing.assert_allclose(landmark_errors_mm(pred, target, 0.5), [[2.5], [5.0]])
    np.testing.assert_allclose(landmark_errors_mm(pred, target, np.array([0.5, 0.1])), [[2.5], [1.0]])
    out = landmark_errors_mm(pred, target, torch.tensor([0.2, 0.2]))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [[1.0], [2.0]])


def test_errors_nan_target_propagates_and_is_excluded_from_pck():
    target = np.zeros((2, 2, 2))
    target[0, 1] = np.nan  # missing landmark
    pred = np.zeros((2, 2, 2))
    pred[0, 0] = [2.0, 0.0]  # 1.0 mm
    pred[1, 0] = [6.0, 0.0]  # 3.0 mm
    pred[1, 1] = [1.0, 0.0]  # 0.5 mm
    err = landmark_errors_mm(pred, target, 0.5)
    assert np.isnan(err[0, 1]) and np.count_nonzero(np.isnan(err)) == 1
    np.testing.assert_allclose(err[~np.isnan(err)], [1.0, 3.0, 0.5])
    # 3 valid entries: <=1 mm: {1.0, 0.5} -> 2/3; <=2.5 mm: same; NaN is in no count.
    res = pck(err, radii=(1.0, 2.5, 3.0))
    assert res[1.0] == pytest.approx(200.0 / 3.0)
    assert res[2.5] == pytest.approx(200.0 / 3.0)
    assert res[3.0] == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("pred_shape", "target_shape", "spacing"),
    [((2, 16, 2), (2, 15, 2), 1.0), ((2, 16, 3), (2, 16, 3), 1.0), ((16, 2), (16, 2), 1.0)],
)
def test_errors_bad_shapes_raise_with_shapes_in_message(pred_shape, target_shape, spacing):
    with pytest.raises(ValueError) as exc:
        landmark_errors_mm(np.zeros(pred_shape), np.zeros(target_shape), spacing)
    assert str(pred_shape) in str(exc.value)


def test_errors_bad_spacing_shape_raises():
    with pytest.raises(ValueError, match=re.escape("got shape (3,)")):
        landmark_errors_mm(np.zeros((2, 16, 2)), np.zeros((2, 16, 2)), np.ones(3))
    with pytest.raises(ValueError, match=re.escape("(2, 3)")):
        landmark_errors_mm(np.zeros((2, 16, 2)), np.zeros((2, 16, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="> 0"):
        landmark_errors_mm(np.zeros((2, 16, 2)), np.zeros((2, 16, 2)), 0.0)


# ------------------------------------------------------------------ pck, outliers
def test_pck_boundaries_are_inclusive():
    # errors exactly on the radii: each radius admits one more error
    errors = np.array([1.0, 1.5, 2.0, 2.5, 3.0])
    assert pck(errors) == {1.0: 20.0, 1.5: 40.0, 2.0: 60.0, 2.5: 80.0}
    assert tuple(pck(errors)) == DEFAULT_RADII
    # a hair above the boundary is not counted
    assert pck(np.array([1.0 + 1e-9]), radii=1)[1.0] == 0.0


def test_pck_boundary_through_coordinates():
    # 3-4-5 px triangle at 0.5 mm/px is exactly 2.5 mm
    err = landmark_errors_mm(np.array([[[3.0, 4.0]]]), np.zeros((1, 1, 2)), 0.5)
    assert err[0, 0] == 2.5
    assert pck(err, radii=(2.0, 2.5)) == {2.0: 0.0, 2.5: 100.0}


def test_pck_all_nan_is_nan():
    assert math.isnan(pck(np.array([np.nan, np.nan]), radii=(1.0,))[1.0])


def test_outlier_rate():
    errors = np.array(
        [
            [1.0, 2.0, 10.0],  # exactly on the threshold -> outlier
            [9.99, 0.0, 0.0],  # below -> not
            [np.nan, 11.0, 0.0],  # NaN ignored, 11 -> outlier
            [np.nan, np.nan, np.nan],  # no valid landmark -> not in the denominator
        ]
    )
    assert outlier_rate(errors) == pytest.approx(200.0 / 3.0)
    assert outlier_rate(errors, threshold_mm=11.5) == 0.0
    assert outlier_rate(errors, threshold_mm=10.5) == pytest.approx(100.0 / 3.0)  # row 2 only
    assert outlier_rate(errors, threshold_mm=1.0) == 100.0


# ------------------------------------------------------------------ release aggregation
def test_release_aggregation_hand_computed_four_knees():
    res = release_aggregation(_four_knees(), subset="model_selection")
    assert res["subset"] == ((0, 8), (9, 15))
    assert res["n_knees"] == 4
    assert res["n_valid"] == {"tibia": 4, "femur": 4}
    assert res["pck"]["tibia"] == EXPECTED_TIBIA
    assert res["pck"]["femur"] == EXPECTED_FEMUR
    assert res["mean"] == EXPECTED_MEAN
    for r, s in EXPECTED_STD.items():
        assert res["std"][r] == pytest.approx(s, abs=1e-12)
    assert res["std"][1.0] == pytest.approx(35.35533905932738)
    # outliers are counted over all landmarks passed in: landmark 5 is not in the subset
    assert res["outliers"] == 25.0


def test_release_group_errors_and_test_subset():
    groups = release_group_errors(_four_knees(), "model_selection")
    np.testing.assert_allclose(groups["tibia"], [1.0, 1.5, 2.0, 2.5])
    np.testing.assert_allclose(groups["femur"], [0.5, 0.8, 0.9, 3.0])

    e = np.zeros((1, NUM_LANDMARKS))
    e[0, [0, 4, 8]] = [1.0, 4.0, 1.0]  # test subset tibia mean 2.0; model-selection tibia mean 1.0
    e[0, [9, 12, 15]] = [0.5, 0.5, 0.5]
    assert resolve_subset("test") == ((0, 4, 8), (9, 12, 15))
    assert release_aggregation(e, "test", radii=(1.5,))["pck"]["tibia"] == {1.5: 0.0}
    assert release_aggregation(e, "model_selection", radii=(1.5,))["pck"]["tibia"] == {1.5: 100.0}
    # custom (tibia_ids, femur_ids): tibia {4} = 4.0 mm, femur {12} = 0.5 mm
    res = release_aggregation(e, ((4,), (12,)), radii=(1.0,))
    assert res["pck"] == {"tibia": {1.0: 0.0}, "femur": {1.0: 100.0}}
    assert res["mean"][1.0] == 50.0
    assert res["std"][1.0] == pytest.approx(100.0 / SQRT2)


def test_release_aggregation_nan_knee_left_out_of_its_group_only():
    e = _four_knees()
    e[3, 8] = np.nan  # knee 3 loses its tibia group error (2.5 mm)
    res = release_aggregation(e, radii=(2.0,))
    assert res["n_valid"] == {"tibia": 3, "femur": 4}
    assert res["pck"]["tibia"][2.0] == 100.0  # tibia [1.0, 1.5, 2.0]
    assert res["pck"]["femur"][2.0] == 75.0


def test_release_aggregation_bad_inputs():
    with pytest.raises(ValueError, match=re.escape("(4, 8)")):
        release_aggregation(np.zeros((4, 8)), "model_selection")
    with pytest.raises(ValueError, match="unknown subset"):
        release_aggregation(_four_knees(), "validation")
    with pytest.raises(ValueError, match="femur landmark"):
        resolve_subset(((0, 9), (15,)))  # 9 is femoral
    with pytest.raises(ValueError, match="pair"):
        resolve_subset(((0,), (9,), (15,)))
    with pytest.raises(ValueError, match=re.escape("(2, 3, 4)")):
        release_aggregation(np.zeros((2, 3, 4)))


# ------------------------------------------------------------------ per-KL breakdown
def test_per_kl_breakdown():
    rows = per_kl_breakdown(_four_knees(), np.array([0, 0, 2, 4]))
    assert [r["setting"] for r in rows] == ["KL0", "KL1", "KL2", "KL3", "KL4"]
    assert [r["n_knees"] for r in rows] == [2, 0, 1, 0, 1]
    kl0, kl1, kl2, kl3, kl4 = rows
    # KL0: knees 0, 1 -> tibia [1.0, 1.5]: 50, 100, 100, 100; femur [0.5, 0.8]: 100 x 4
    assert kl0["mean"] == {1.0: 75.0, 1.5: 100.0, 2.0: 100.0, 2.5: 100.0}
    assert kl0["std"][1.0] == pytest.approx(50.0 / SQRT2)
    assert kl0["std"][2.5] == 0.0
    assert kl0["outliers"] == 0.0
    # KL2: knee 2 -> tibia 2.0: 0, 0, 100, 100; femur 0.9: 100 x 4
    assert kl2["mean"] == {1.0: 50.0, 1.5: 50.0, 2.0: 100.0, 2.5: 100.0}
    assert kl2["std"][1.5] == pytest.approx(100.0 / SQRT2)
    # KL4: knee 3 -> tibia 2.5: 0, 0, 0, 100; femur 3.0: 0 x 4; landmark 5 is an outlier
    assert kl4["mean"] == {1.0: 0.0, 1.5: 0.0, 2.0: 0.0, 2.5: 50.0}
    assert kl4["outliers"] == 100.0
    # empty grades are reported with n = 0 and NaN metrics
    for empty in (kl1, kl3):
        assert all(math.isnan(v) for v in empty["mean"].values())
        assert math.isnan(empty["outliers"])
    # a knee without a grade (NaN) is in no row
    rows_nan = per_kl_breakdown(_four_knees(), torch.tensor([0.0, 0.0, 2.0, float("nan")]))
    assert [r["n_knees"] for r in rows_nan] == [2, 0, 1, 0, 0]
    with pytest.raises(ValueError, match=re.escape("(3,)")):
        per_kl_breakdown(_four_knees(), np.array([0, 1, 2]))


# ------------------------------------------------------------------ tables
def test_format_table_markdown_and_csv(tmp_path):
    results = {"All grades": release_aggregation(_four_knees())}
    rows = per_kl_breakdown(_four_knees(), np.array([0, 0, 2, 4]))
    table = format_table_markdown([{"setting": "All grades", **results["All grades"]}] + rows)
    lines = table.strip().splitlines()
    assert lines[0] == "| setting | 1 mm | 1.5 mm | 2 mm | 2.5 mm | % out |"
    assert lines[1] == "|---|---|---|---|---|---|"
    assert lines[2] == "| All grades | 50.00 ± 35.36 | 62.50 ± 17.68 | 75.00 ± 0.00 | 87.50 ± 17.68 | 25.00 |"
    assert lines[3] == "| KL0 | 75.00 ± 35.36 | 100.00 ± 0.00 | 100.00 ± 0.00 | 100.00 ± 0.00 | 0.00 |"
    assert lines[4] == "| KL1 | n/a | n/a | n/a | n/a | n/a |"
    assert len(lines) == 2 + 1 + 5
    # mapping input and a radius selection
    assert format_table_markdown(results, radii=(2.5,), decimals=1).splitlines()[2] == (
        "| All grades | 87.5 ± 17.7 | 25.0 |"
    )

    path = write_table_csv(results, tmp_path / "table.csv")
    with open(path, newline="", encoding="utf-8") as f:
        read = list(csv.DictReader(f))
    assert len(read) == 1
    row = read[0]
    assert row["setting"] == "All grades" and row["n_knees"] == "4"
    assert float(row["1 mm mean"]) == 50.0
    assert float(row["1 mm std"]) == pytest.approx(50.0 / SQRT2, abs=1e-12)
    assert float(row["tibia 1.5 mm"]) == 50.0 and float(row["femur 2.5 mm"]) == 75.0
    assert float(row["% out"]) == 25.0


# ------------------------------------------------------------------ CED
def test_cumulative_error_distribution_values():
    ced = cumulative_error_distribution(np.array([1.0, 2.0, 3.0, np.nan]), [0.0, 1.0, 2.5, 10.0])
    np.testing.assert_allclose(ced, [0.0, 100.0 / 3.0, 200.0 / 3.0, 100.0])


def test_plot_ced_writes_valid_png(tmp_path):
    groups = release_group_errors(_four_knees())
    path = tmp_path / "ced.png"
    out = plot_ced(groups, path, max_error_mm=5, title="CED")
    assert out == path and path.is_file()
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] >= 200 and img.shape[1] >= 300
    flat = img[..., :3].reshape(-1, 3)
    assert np.unique(flat, axis=0).shape[0] > 10  # not one colour: axes, text, two curves
    # the tibia curve is drawn in the bone colour (pure red) somewhere in the image
    assert np.any(np.all(np.isclose(flat, [1.0, 0.0, 0.0], atol=0.02), axis=1))


def test_plot_ced_rejects_empty(tmp_path):
    with pytest.raises(ValueError):
        plot_ced({}, tmp_path / "x.png")


# ------------------------------------------------------------------ MONAI metric
def test_metric_accumulates_two_iterations_like_plain_functions():
    errors = _four_knees()
    pred, target = _coords_for(errors, spacing=0.5)
    pred_t = torch.as_tensor(pred)
    target_t = torch.as_tensor(target)
    metric = LandmarkErrorMetric(spacing_mm=0.5, subset="model_selection")
    out1 = metric(y_pred=pred_t[:2], y=target_t[:2])  # batch-first (B, M, 2)
    assert out1.shape == (2, NUM_LANDMARKS)
    metric(y_pred=list(pred_t[2:]), y=list(target_t[2:]))  # list of (M, 2): decollated form
    buf = metric.get_buffer()
    assert buf.shape == (4, NUM_LANDMARKS)
    np.testing.assert_allclose(buf.numpy(), errors, atol=1e-12)

    assert metric.aggregate() == 87.5  # mean PCK over groups at 2.5 mm
    full = metric.aggregate("all")
    plain = release_aggregation(landmark_errors_mm(pred, target, 0.5), "model_selection")
    assert full["pck"] == plain["pck"] == {"tibia": EXPECTED_TIBIA, "femur": EXPECTED_FEMUR}
    assert full["mean"] == plain["mean"] == EXPECTED_MEAN
    assert full["std"] == pytest.approx(plain["std"])
    assert full["outliers"] == plain["outliers"] == 25.0
    # mean error (MONAI reduction) over all 64 entries: (3.0 + 4.6 + 5.8 + 23.0) / 64
    assert metric.aggregate("error").item() == pytest.approx(36.4 / 64)

    metric.reset()
    with pytest.raises(ValueError, match="empty"):
        metric.aggregate()


def test_metric_key_radius_and_no_subset():
    errors = _four_knees()
    pred, target = (torch.as_tensor(a) for a in _coords_for(errors, spacing=0.25))
    m1 = LandmarkErrorMetric(spacing_mm=0.25, subset="model_selection", key_radius=1.0)
    m1(pred, target)
    assert m1.aggregate() == 50.0
    # subset None: all 64 entries pooled as one group; 0 mm entries count, std undefined
    m_all = LandmarkErrorMetric(spacing_mm=0.25, aggregation="all", radii=(1.0,))
    m_all(pred, target)
    res = m_all.aggregate()
    assert res["pck"]["all"][1.0] == pytest.approx(pck(errors, 1.0)[1.0])
    # 64 entries, 17 non-zero -> 47 zeros; non-zero <= 1 mm: 0.5, 0.25, 0.75 (knee 0),
    # 1.0, 0.6, 1.0 (knee 1), 0.4 (knee 2) -> 47 + 7 = 54 of 64 = 84.375 %
    assert res["mean"][1.0] == pytest.approx(100.0 * 54 / 64)
    assert math.isnan(res["std"][1.0])
    assert res["outliers"] == 25.0


def test_pck_then_error_breaks_ties_by_the_mean_error_only():
    """Two models with the same PCK: the lower mean error wins; a PCK step always outweighs the error."""
    rng = np.random.default_rng(3)
    target = torch.as_tensor(rng.uniform(10, 200, size=(6, NUM_LANDMARKS, 2)))

    def score(offset_mm):
        m = LandmarkErrorMetric(spacing_mm=1.0, subset="model_selection", aggregation="pck_then_error")
        m(target + torch.as_tensor(offset_mm), target)
        return m.aggregate(), m.aggregate("pck_mean")

    close, close_pck = score([0.5, 0.0])  # every landmark 0.5 mm off: PCK 100
    far, far_pck = score([2.0, 0.0])  # 2 mm off: still PCK 100 at 2.5 mm
    assert close_pck == far_pck == 100.0
    assert close == pytest.approx(100.0 - 0.5 / 1000) and far == pytest.approx(100.0 - 2.0 / 1000)
    assert close > far
    worse = torch.zeros(6, NUM_LANDMARKS, 2, dtype=torch.float64)
    worse[0, 0, 0] = 6.0  # the tibial group of one knee (mean of landmarks 0, 8) 3 mm off, all else exact
    m = LandmarkErrorMetric(spacing_mm=1.0, subset="model_selection", aggregation="pck_then_error")
    m(target + worse, target)
    assert m.aggregate() < far  # lower PCK loses despite a far smaller mean error


def test_metric_normalised_coordinates():
    # image (H, W) = (100, 200): dx = 0.01 * 200 = 2 px, dy = 0.03 * 100 = 3 px
    metric = LandmarkErrorMetric(spacing_mm=0.5, image_size=(100, 200), aggregation="error")
    y = torch.tensor([[[0.5, 0.5]]])
    y_pred = torch.tensor([[[0.51, 0.53]]])
    metric(y_pred, y)
    assert metric.get_buffer()[0, 0].item() == pytest.approx(0.5 * math.sqrt(13.0), rel=1e-5)


def test_metric_bad_inputs():
    metric = LandmarkErrorMetric()
    with pytest.raises(ValueError, match=re.escape("y_pred shape (2, 16, 2), y shape (2, 15, 2)")):
        metric(torch.zeros(2, 16, 2), torch.zeros(2, 15, 2))
    with pytest.raises(ValueError, match=re.escape("(2, 16, 3)")):
        metric(torch.zeros(2, 16, 3), torch.zeros(2, 16, 3))
    with pytest.raises(ValueError, match="aggregation"):
        LandmarkErrorMetric(aggregation="median")
    with pytest.raises(ValueError, match="spacing_mm"):
        LandmarkErrorMetric(spacing_mm=(0.5, 0.5))
    with pytest.raises(ValueError, match="unknown subset"):
        LandmarkErrorMetric(subset="everything")


class _FixedNet(torch.nn.Module):
    """Returns the same (M, 2) coordinates for every image of a batch."""

    def __init__(self, coords: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("coords", coords)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.coords.unsqueeze(0).expand(x.shape[0], -1, -1).clone()


@pytest.mark.parametrize("decollate", [True, False])
def test_metric_in_supervised_evaluator(decollate):
    from monai.data import DataLoader
    from monai.engines import SupervisedEvaluator
    from monai.handlers import IgniteMetricHandler, from_engine

    errors = _four_knees()
    spacing = 0.5
    fixed = torch.zeros(NUM_LANDMARKS, 2, dtype=torch.float64)
    fixed[:, 0] = 100.0 + 4.0 * torch.arange(NUM_LANDMARKS)
    fixed[:, 1] = 80.0
    # label_k = fixed - displacement_k, so pred - label = displacement_k (tibia along x, femur along y)
    data = []
    for k in range(4):
        disp = torch.zeros(NUM_LANDMARKS, 2, dtype=torch.float64)
        disp[:9, 0] = torch.as_tensor(errors[k, :9]) / spacing
        disp[9:, 1] = torch.as_tensor(errors[k, 9:]) / spacing
        data.append({"image": torch.zeros(1, 8, 8), "label": fixed - disp})
    loader = DataLoader(data, batch_size=2, shuffle=False, num_workers=0)  # two iterations

    transform = from_engine(["pred", "label"])
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=_FixedNet(fixed),
        key_val_metric={
            # default output_transform: from_engine(["pred", "label"])
            "val_pck": LandmarkErrorHandler(spacing_mm=spacing, subset="model_selection")
        },
        additional_metrics={
            "val_mean_error_mm": IgniteMetricHandler(
                metric_fn=LandmarkErrorMetric(spacing_mm=spacing, aggregation="error"),
                output_transform=transform,
                save_details=False,
            )
        },
        decollate=decollate,
    )
    evaluator.run()
    assert evaluator.state.iteration == 2
    assert evaluator.state.metrics["val_pck"] == pytest.approx(87.5)
    assert evaluator.state.best_metric == pytest.approx(87.5)
    assert evaluator.state.metrics["val_mean_error_mm"] == pytest.approx(36.4 / 64)
    details = evaluator.state.metric_details["val_pck"]
    assert tuple(details.shape) == (4, NUM_LANDMARKS)
    np.testing.assert_allclose(details.numpy(), errors, atol=1e-9)
