"""The shape plausibility model: pose-free, side-aware, and it separates knees from things that are not."""

import numpy as np
import pytest

from kneel_monai.quality import QualityThresholds, assess_knee
from kneel_monai.shape_plausibility import fit_plausibility_model, load_plausibility_model, right_oriented
from kneel_monai.similarity import apply_similarity
from kneel_monai.synthetic.generate import generate_radiograph


@pytest.fixture(scope="module")
def model():
    return load_plausibility_model()


@pytest.fixture(scope="module")
def synthetic_knees():
    """Knees of synthetic radiographs: their shapes are drawn from a model of the 748 annotated OAI knees."""
    knees = []
    for seed in range(3):
        sample = generate_radiograph(100 + seed, spacing_mm=0.5, size=(600, 800))
        knees += [(np.asarray(k["landmarks_px"]) * 0.5, side) for side, k in sample.knees.items() if k]
    return knees


def test_distance_ignores_pose_and_size(model, synthetic_knees):
    points, side = synthetic_knees[0]
    a = np.radians(7.0)
    moved = apply_similarity(np.array([[1.8 * np.cos(a), -1.8 * np.sin(a), 40], [1.8 * np.sin(a), 1.8 * np.cos(a),
                                                                                 -9]]),
                             points)
    assert model.distance(moved, side) == pytest.approx(model.distance(points, side), rel=1e-9)


def test_left_knees_are_mirrored_first(model, synthetic_knees):
    points, side = synthetic_knees[0]
    mirrored = points * [-1, 1]
    other = "L" if side == "R" else "R"
    assert model.distance(mirrored, other) == pytest.approx(model.distance(points, side), rel=1e-9)
    # the same points called the other side are a mirrored knee: far out
    assert model.distance(points, other) > 2 * QualityThresholds().max_shape_distance


def test_knees_pass_and_non_knees_do_not(model, synthetic_knees):
    limit = QualityThresholds().max_shape_distance
    for points, side in synthetic_knees:
        assert model.distance(points, side) <= limit
    rng = np.random.default_rng(0)
    line = np.stack([np.linspace(0, 90, 16), rng.normal(0, 0.5, 16)], axis=1)  # along a collimation edge
    blob = rng.normal(0, 20, size=(16, 2))
    for points in (line, blob):
        assert model.distance(points) > 2 * limit
    assert model.distance(np.full((16, 2), np.nan)) == float("inf")


def test_fitted_model_puts_its_own_shapes_at_the_expected_distance(synthetic_knees):
    rng = np.random.default_rng(1)
    base, side = synthetic_knees[0]
    shapes = [right_oriented(base, side) + rng.normal(0, 1.0, size=(16, 2)) for _ in range(300)]
    fitted = fit_plausibility_model(shapes, ["R"] * len(shapes), variance_kept=0.9)
    d2 = np.array([fitted.distance(s) ** 2 for s in shapes])
    k = len(fitted.variances)
    assert d2.mean() == pytest.approx(k + 1, rel=0.1)  # E[Σ b²/λ] = k, E[‖r‖²/ρ²] = 1 on the fitting shapes
    with pytest.raises(ValueError, match="at least 10"):
        fit_plausibility_model(shapes[:5], ["R"] * 5)


def test_the_quality_flag_names_an_implausible_shape():
    good = {"tibial_plateau_width_mm": 75.0, "femoral_condyle_width_mm": 78.0, "joint_line_angle_deg": 1.0,
            "lateral_jsw_mm": 5.0, "medial_jsw_mm": 4.0}
    assert assess_knee(np.full(16, 0.6), good, None, QualityThresholds(), 4.0) == ("ok", [])
    quality, reasons = assess_knee(np.full(16, 0.6), good, None, QualityThresholds(), 30.0)
    assert quality == "check" and len(reasons) == 1 and "implausible shape" in reasons[0]
