"""A lone knee's side from its anatomy (kneel_monai.side): the fibula evidence and the decision rule.

Drawn knees give the geometry exactly; the pipeline on synthetic radiographs is in test_detection.py,
the measured figures on real knees in docs/real_knees.md (benchmarks/eval_single_knee_side.py).
"""

import numpy as np
import pytest

from kneel_monai.side import FibulaBoxes, decide_side, fibula_boxes, fibula_evidence

PLATEAU_Y, LEFT_X, RIGHT_X = 150.0, 120.0, 280.0  # a 160 px tibial plateau


def plateau_landmarks(image_left_is_lateral: bool = True, dy: float = 0.0) -> np.ndarray:
    """16 points: tibia 0..8 along the plateau, femur 9..15 above it; landmark 0 is the lateral margin."""
    xs = np.linspace(LEFT_X, RIGHT_X, 9)
    if not image_left_is_lateral:
        xs = xs[::-1]
    tibia = np.stack([xs, np.full(9, PLATEAU_Y + dy)], 1)
    femur = np.stack([np.linspace(xs[0], xs[-1], 7), np.full(7, PLATEAU_Y - 10 + dy)], 1)
    return np.concatenate([tibia, femur])


def drawn_knee(fibula: str | None = "left", size: int = 400) -> np.ndarray:
    """Soft tissue 0.2, femur and tibia 1.0, the fibular head (0.8) below one tibial margin."""
    yy, xx = np.mgrid[:size, :size].astype(float)
    img = np.full((size, size), 0.2)
    img[(xx > LEFT_X + 8) & (xx < RIGHT_X - 8)] = 1.0  # the shafts (narrower than the plateau)
    img[(yy > PLATEAU_Y - 40) & (yy < PLATEAU_Y + 30) & (xx > LEFT_X) & (xx < RIGHT_X)] = 1.0  # the epiphyses
    img[(yy > PLATEAU_Y - 4) & (yy < PLATEAU_Y + 4)] = 0.3  # the joint space
    if fibula is not None:
        fx = LEFT_X - 5 if fibula == "left" else RIGHT_X + 5
        img[(xx - fx) ** 2 + (yy - (PLATEAU_Y + 0.33 * 160)) ** 2 < 20 ** 2] = 0.8
    return img


def test_the_fibula_on_the_image_left_says_right_knee_and_its_mirror_the_opposite():
    right = fibula_evidence(drawn_knee(), plateau_landmarks(True))
    assert right is not None and right > 0.5
    # the mirrored knee (a left knee): the same evidence, the other sign, whichever way the ids run
    mirrored = drawn_knee()[:, ::-1]
    pts = plateau_landmarks(True)
    pts[:, 0] = mirrored.shape[1] - 1 - pts[:, 0]
    assert fibula_evidence(mirrored, pts) == pytest.approx(-right, rel=0.15)  # the same up to the pixel grid
    ids_mirrored = plateau_landmarks(False) + [mirrored.shape[1] - 1 - LEFT_X - RIGHT_X, 0]
    assert fibula_evidence(mirrored, ids_mirrored) == pytest.approx(-right, rel=0.15)  # the same up to the pixel grid
    # no fibula drawn: evidence within the pixel grid's asymmetry, below the margin a sure call needs
    assert abs(fibula_evidence(drawn_knee(None), plateau_landmarks(True))) < 0.1
    assert fibula_evidence(drawn_knee("right"), plateau_landmarks(True)) < -0.5


def test_no_evidence_when_the_image_cannot_show_the_fibula():
    knee = drawn_knee()
    # inverted grey levels (a mislabelled MONOCHROME1): the tibia is darker than what lies beside it
    assert fibula_evidence(knee.max() - knee, plateau_landmarks(True)) is None
    # the field ends just below the plateau: the boxes are cut off
    assert fibula_evidence(knee[: int(PLATEAU_Y + 0.25 * 160)], plateau_landmarks(True)) is None
    # a knee at the image's left edge: the lateral box is outside
    assert fibula_evidence(knee[:, 130:], plateau_landmarks(True) - [130, 0]) is None
    assert fibula_evidence(np.full((400, 400), 3.0), plateau_landmarks(True)) is None
    # a box kept when enough of it is inside (min_inside)
    cut = knee[: int(PLATEAU_Y + 0.42 * 160)]
    assert fibula_evidence(cut, plateau_landmarks(True), FibulaBoxes(min_inside=0.5)) > 0
    assert fibula_evidence(cut, plateau_landmarks(True), FibulaBoxes(min_inside=0.9)) is None


def test_the_boxes_sit_below_the_tibial_margins_in_plateau_widths():
    left, right, tibia = fibula_boxes(plateau_landmarks(False), FibulaBoxes(0.15, 0.1, 0.2, 0.5))
    assert left == pytest.approx((LEFT_X - 24, LEFT_X + 16, PLATEAU_Y + 32, PLATEAU_Y + 80))
    assert right == pytest.approx((RIGHT_X - 16, RIGHT_X + 24, PLATEAU_Y + 32, PLATEAU_Y + 80))
    assert tibia[0] == pytest.approx(LEFT_X + 40) and tibia[1] == pytest.approx(RIGHT_X - 40)


def test_the_side_is_sure_only_when_the_fibula_and_the_heat_maps_agree_on_trusted_landmarks():
    sure = decide_side({"R": 0.55, "L": 0.50}, 0.6)
    assert (sure.side, sure.sure, sure.why) == ("R", True, "")
    left = decide_side({"R": 0.45, "L": 0.50}, -0.3)
    assert (left.side, left.sure) == ("L", True)
    # they disagree: the fibula's side, to check
    disagree = decide_side({"R": 0.45, "L": 0.50}, 0.6)
    assert (disagree.side, disagree.sure) == ("R", False) and "do not agree" in disagree.why
    # a fibula barely seen, or heat-maps within the margin: to check
    weak = decide_side({"R": 0.55, "L": 0.50}, 0.05, fibula_margin=0.1)
    assert not weak.sure and "barely" in weak.why
    assert not decide_side({"R": 0.51, "L": 0.50}, 0.6, confidence_margin=0.02).sure
    # both agree, but on landmarks flagged for checking: to check
    flagged = decide_side({"R": 0.55, "L": 0.50}, 0.6, landmarks_ok=False)
    assert (flagged.side, flagged.sure) == ("R", False) and "flagged" in flagged.why
    # the fibula cannot be seen: the surer heat-maps' side, to check
    unseen = decide_side({"R": 0.45, "L": 0.50}, None)
    assert (unseen.side, unseen.sure, unseen.fibula) == ("L", False, None)
    assert unseen.as_json() == {"side": "L", "sure": False, "fibula": None, "confidence": {"R": 0.45, "L": 0.5},
                                "why": unseen.why} and "cannot be seen" in unseen.why
    assert not decide_side({"R": 0.55, "L": 0.50}, float("nan")).sure
