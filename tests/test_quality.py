"""The per-knee quality flag: each rule on its own, and a wrong pixel spacing caught end to end."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from kneel_monai.inference import KneelPredictor, default_model_dirs
from kneel_monai.quality import QualityThresholds, assess_knee
from kneel_monai.synthetic.generate import generate_radiograph

GOOD = {"lateral_jsw_mm": 5.5, "medial_jsw_mm": 4.2, "tibial_plateau_width_mm": 78.0,
        "femoral_condyle_width_mm": 76.0, "joint_line_angle_deg": 1.5}


def test_a_typical_knee_is_ok():
    """Typical of a well-placed real knee (medians of the calibration's validation knees: 0.55, 0.84 mm)."""
    assert assess_knee(np.full(16, 0.55), GOOD, np.full(16, 0.9)) == ("ok", [])


@pytest.mark.parametrize("change, word", [
    ({"confidence": np.full(16, 0.2)}, "low confidence"),
    ({"spread": np.r_[np.full(15, 1.0), 3.0]}, "MC-dropout spread"),
    ({"tibial_plateau_width_mm": 160.0}, "implausible tibial plateau width"),
    ({"femoral_condyle_width_mm": 30.0}, "implausible femoral condyle width"),
    ({"joint_line_angle_deg": -20.0}, "joint-line angle"),
    ({"medial_jsw_mm": 22.0}, "medial joint space width"),
])
def test_each_rule_flags_with_its_reason(change, word):
    confidence = change.pop("confidence", np.full(16, 0.55))
    spread = change.pop("spread", None)
    quality, reasons = assess_knee(confidence, {**GOOD, **change}, spread)
    assert quality == "check" and len(reasons) == 1 and word in reasons[0], reasons


T = QualityThresholds()
#: (what is changed, its value at the limit (still ok), just beyond it (check), the reason's words)
AT_AND_BEYOND = [
    ("confidence", T.mean_confidence, T.mean_confidence - 1e-6, "low confidence"),
    ("spread", T.max_spread_mm, T.max_spread_mm + 1e-6, "MC-dropout spread"),
    ("shape_distance", T.max_shape_distance, T.max_shape_distance + 1e-6, "implausible shape"),
    ("tibial_plateau_width_mm", T.plateau_width_mm[0], T.plateau_width_mm[0] - 1e-6, "tibial plateau width"),
    ("tibial_plateau_width_mm", T.plateau_width_mm[1], T.plateau_width_mm[1] + 1e-6, "tibial plateau width"),
    ("femoral_condyle_width_mm", T.condyle_width_mm[0], T.condyle_width_mm[0] - 1e-6, "femoral condyle width"),
    ("femoral_condyle_width_mm", T.condyle_width_mm[1], T.condyle_width_mm[1] + 1e-6, "femoral condyle width"),
    ("joint_line_angle_deg", T.max_abs_angle_deg, T.max_abs_angle_deg + 1e-6, "joint-line angle"),
    ("joint_line_angle_deg", -T.max_abs_angle_deg, -T.max_abs_angle_deg - 1e-6, "joint-line angle"),
    ("lateral_jsw_mm", T.max_jsw_mm, T.max_jsw_mm + 1e-6, "lateral joint space width"),
    ("medial_jsw_mm", T.max_jsw_mm, T.max_jsw_mm + 1e-6, "medial joint space width"),
]


@pytest.mark.parametrize("name, at, beyond, words", AT_AND_BEYOND)
def test_each_rule_at_its_limit_is_ok_and_just_beyond_is_check(name, at, beyond, words):
    def assess(value):
        confidence = np.full(16, value) if name == "confidence" else np.full(16, 0.55)
        spread = np.r_[np.full(15, 0.5), value] if name == "spread" else None
        shape = value if name == "shape_distance" else None
        measurements = {**GOOD, name: value} if name in GOOD else GOOD
        return assess_knee(confidence, measurements, spread, shape_distance=shape)

    assert assess(at) == ("ok", [])
    quality, reasons = assess(beyond)
    assert quality == "check" and len(reasons) == 1 and words in reasons[0], reasons


def test_thresholds_are_settable():
    strict = QualityThresholds(mean_confidence=0.5)
    assert assess_knee(np.full(16, 0.43), GOOD, thresholds=strict)[0] == "check"


def test_a_wrong_pixel_spacing_is_flagged():
    """The same radiograph read with 2.5× its spacing: landmarks still found, measurements impossible → check."""
    sample = generate_radiograph(7_100_001, spacing_mm=0.2, size=(1600, 1900))
    predictor = KneelPredictor(*default_model_dirs(), device="cpu")
    results = {}
    for factor in (1.0, 2.5):
        s = 0.2 * factor
        image = MetaTensor(torch.from_numpy(sample.image)[None], affine=torch.diag(torch.tensor([s, s, 1.0],
                                                                                                 dtype=torch.float64)))
        results[factor] = predictor.predict_image(image, f"spacing x{factor}")
    for side in ("R", "L"):
        assert results[1.0].knees[side].quality == "ok", results[1.0].knees[side].quality_reasons
        wrong = results[2.5].knees[side]
        # since 0.3.1 a knee 2.5× too small for the ROI may not be recognised at all: then it is absent,
        # with the reason; when it is found, its measurements say the spacing is wrong
        if wrong.present:
            assert wrong.quality == "check"
            assert any("implausible tibial plateau width" in r for r in wrong.quality_reasons), wrong.quality_reasons
        else:
            assert "no knee" in wrong.reason
