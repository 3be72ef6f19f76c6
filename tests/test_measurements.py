"""Knee measurements on knees of known geometry: exact values, invariance to pose and side."""

import math

import numpy as np
import pytest

from kneel_monai.landmarks import flip_landmark_ids
from kneel_monai.measurements import MEASUREMENTS, knee_measurements, point_to_polyline
from kneel_monai.synthetic.generate import generate_radiograph


def known_knee(lateral_gap=6.0, medial_gap=4.0):
    """A right knee in image coordinates (x lateral → medial, y down, mm) with gaps drawn by hand.

    Tibial plateau on y = 0 with the spines (T3–T5) rising 9–11 mm between the compartments, as in
    the OAI knees; femoral condyle points at the given gaps above the plateau; the notch edges
    (F11, F13) and centre (F12) high above the spines.
    """
    tibia = [(0, 0), (10, 0), (20, 0), (33, -9), (40, -8), (47, -11), (60, 0), (70, 0), (80, 0)]
    femur = [(2, -lateral_gap - 2), (12, -lateral_gap), (27, -14), (40, -20),
             (53, -14), (68, -medial_gap), (78, -medial_gap - 2)]
    return np.array(tibia + femur, dtype=float)


def test_known_geometry_gives_the_drawn_values():
    m = knee_measurements(known_knee())
    assert list(m) == list(MEASUREMENTS)
    assert m["lateral_jsw_mm"] == pytest.approx(6.0)
    assert m["medial_jsw_mm"] == pytest.approx(4.0)
    assert m["tibial_plateau_width_mm"] == pytest.approx(80.0)
    assert m["femoral_condyle_width_mm"] == pytest.approx(math.hypot(76.0, 2.0))
    # femoral line from (2, -8) to (78, -6): 2 mm over 76 mm, nearer the tibia medially -> positive
    assert m["joint_line_angle_deg"] == pytest.approx(math.degrees(math.atan2(2.0, 76.0)))


def test_the_compartments_use_only_their_own_points():
    """Pinned definition: JSW from F9/F10 to the polyline T0-T2 (lateral) and F14/F15 to T6-T8 (medial). The notch
    edges (F11, F13) and the spines (T3, T5) are moved here to where counting them would shorten the gap."""
    knee = known_knee(6.0, 4.0)
    knee[11] = (22.0, -3.0)  # F11 3.6 mm from the lateral plateau's end
    knee[13] = (58.0, -2.5)  # F13 3.2 mm from the medial plateau's start
    knee[3] = (14.0, -4.0)  # T3 2.8 mm from F10
    knee[5] = (66.0, -3.0)  # T5 2.2 mm from F14
    m = knee_measurements(knee)
    assert m["lateral_jsw_mm"] == pytest.approx(6.0) and m["medial_jsw_mm"] == pytest.approx(4.0)


def test_angle_sign_follows_the_narrow_side():
    assert knee_measurements(known_knee(6.0, 4.0))["joint_line_angle_deg"] > 0
    lateral_narrow = known_knee(4.0, 6.0)  # F9 6 mm, F15 8 mm from the tibial line: converging laterally
    assert knee_measurements(lateral_narrow)["joint_line_angle_deg"] < 0
    parallel = known_knee(5.0, 5.0)
    parallel[9, 1] = parallel[15, 1] = -7.0
    assert knee_measurements(parallel)["joint_line_angle_deg"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_pose_and_side_do_not_change_the_measurements(seed):
    """Rotation, translation and the mirror image of a left knee (ids unchanged) give the same values."""
    rng = np.random.default_rng(seed)
    knee = known_knee(*rng.uniform(2, 8, size=2))
    base = knee_measurements(knee)
    theta = rng.uniform(-np.pi, np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = knee @ rot.T + rng.uniform(-500, 500, size=2)
    mirrored = knee * np.array([-1.0, 1.0])  # a left knee: same anatomy, image x reversed, same ids
    for other in (moved, mirrored, moved * np.array([-1.0, 1.0])):
        for name, value in knee_measurements(other).items():
            assert value == pytest.approx(base[name], abs=1e-9), name


def test_mirroring_without_reordering_ids_swaps_the_compartments():
    """Flipping the ids (the augmentation rule) turns lateral into medial: the JSWs swap, the angle flips."""
    knee = known_knee(6.0, 3.0)
    flipped = flip_landmark_ids(knee * np.array([-1.0, 1.0]))
    a, b = knee_measurements(knee), knee_measurements(flipped)
    assert b["lateral_jsw_mm"] == pytest.approx(a["medial_jsw_mm"])
    assert b["medial_jsw_mm"] == pytest.approx(a["lateral_jsw_mm"])
    assert b["joint_line_angle_deg"] == pytest.approx(-a["joint_line_angle_deg"])


def test_medial_narrowing_with_kl_grade_in_the_oai_annotations(kneel_csv_path):
    """On the 748 real annotated knees: the medial JSW falls with KL grade (medial OA), the lateral does not."""
    import csv

    medial, lateral = {}, {}
    with open(kneel_csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["kl"] in ("", "nan"):
                continue
            tibia = np.array(row["tibia"].split(","), float).reshape(-1, 2)
            femur = np.array(row["femur"].split(","), float).reshape(-1, 2)
            m = knee_measurements(np.vstack([tibia, femur]) * 0.3)  # the CSV is in 0.3 mm pixels
            medial.setdefault(int(row["kl"]), []).append(m["medial_jsw_mm"])
            lateral.setdefault(int(row["kl"]), []).append(m["lateral_jsw_mm"])
    med = {k: float(np.median(v)) for k, v in medial.items()}
    lat = {k: float(np.median(v)) for k, v in lateral.items()}
    assert med[4] < med[3] < med[0] - 0.5 and med[4] < 2.5 < med[0], med
    assert max(lat.values()) - min(lat.values()) < 1.0, lat


def test_synthetic_knees_measure_like_real_anatomy():
    """Generated knees (shape model of 748 OAI knees): every measurement in the range of real knees."""
    for seed in range(6):
        sample = generate_radiograph(seed, spacing_mm=0.3, size=(1100, 1300))
        spacing = np.array(sample.pixel_spacing_mm[::-1])  # (x, y)
        for side, knee in sample.knees.items():
            if knee is None:
                continue
            m = knee_measurements(np.asarray(knee["landmarks_px"]) * spacing)
            assert 55 < m["tibial_plateau_width_mm"] < 100, m
            assert 50 < m["femoral_condyle_width_mm"] < 100, m
            assert 0 <= m["lateral_jsw_mm"] < 15 and 0 <= m["medial_jsw_mm"] < 15, m
            assert abs(m["joint_line_angle_deg"]) < 15, m


def test_point_to_polyline_and_bad_input():
    line = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])
    assert point_to_polyline(np.array([5.0, 3.0]), line) == pytest.approx(3.0)
    assert point_to_polyline(np.array([13.0, 5.0]), line) == pytest.approx(3.0)
    assert point_to_polyline(np.array([-3.0, -4.0]), line) == pytest.approx(5.0)
    with pytest.raises(ValueError, match=r"\(16, 2\)"):
        knee_measurements(np.zeros((15, 2)))
    bad = known_knee()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knee_measurements(bad)
