"""Similarity fits: exact recovery, robustness to a misplaced point, no reflection, pose-free residuals."""

import numpy as np
import pytest

from kneel_monai.similarity import (
    aligned_residuals,
    apply_similarity,
    fit_similarity,
    robust_similarity,
    similarity_angle_deg,
    similarity_scale,
)


def _similarity(scale, angle_deg, tx, ty):
    a = np.radians(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


@pytest.fixture
def shape():
    return np.random.default_rng(0).uniform(0, 400, size=(16, 2))


def test_least_squares_recovers_a_known_similarity(shape):
    truth = _similarity(0.66, 4.0, 20.0, -7.5)
    fitted = fit_similarity(shape, apply_similarity(truth, shape))
    np.testing.assert_allclose(fitted, truth, atol=1e-9)
    assert similarity_scale(fitted) == pytest.approx(0.66)
    assert similarity_angle_deg(fitted) == pytest.approx(4.0)


def test_robust_fit_ignores_one_misplaced_point_that_drags_least_squares(shape):
    truth = _similarity(0.5, -2.0, 100.0, 50.0)
    target = apply_similarity(truth, shape) + np.random.default_rng(1).normal(0, 0.3, size=shape.shape)
    target[3] += [40.0, -25.0]  # one landmark far off, as a model's bad point
    plain = fit_similarity(shape, target)
    robust, residuals = robust_similarity(shape, target, delta=1.0)
    plain_err = np.abs(apply_similarity(plain, shape) - apply_similarity(truth, shape)).max()
    robust_err = np.abs(apply_similarity(robust, shape) - apply_similarity(truth, shape)).max()
    assert robust_err < 0.6 < plain_err
    assert residuals.argmax() == 3 and residuals[3] > 40


def test_a_mirror_is_not_a_similarity(shape):
    mirrored = shape * [-1, 1]
    fitted = fit_similarity(shape, mirrored)
    assert np.linalg.det(fitted[:, :2]) > 0  # rotation and scale only
    assert aligned_residuals(shape, mirrored).mean() > 10


def test_aligned_residuals_remove_pose_and_scale_only(shape):
    moved = apply_similarity(_similarity(1.7, 30.0, -50.0, 8.0), shape)
    np.testing.assert_allclose(aligned_residuals(moved, shape), 0, atol=1e-8)
    bent = moved.copy()
    bent[0] += 5.0
    assert aligned_residuals(bent, shape).max() > 0.5


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="point sets"):
        fit_similarity(np.zeros((16, 2)), np.zeros((15, 2)))
    with pytest.raises(ValueError, match="coincide"):
        fit_similarity(np.ones((16, 2)), np.zeros((16, 2)))
