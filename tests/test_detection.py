"""Knee detection with the shipped models: one knee anywhere, its side and how it was decided, no knee at all.

Synthetic radiographs give the truth (landmarks and sides); the real-film figures are in
docs/real_knees.md (``benchmarks/eval_full_radiographs.py``).
"""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from kneel_monai.detection import ScanSettings, distinct_knees, grid_starts, zoomed
from kneel_monai.inference import KneelPredictor, RadiographResult, default_model_dirs
from kneel_monai.synthetic.generate import generate_radiograph

SPACING = 0.2


def as_image(array: np.ndarray, spacing: float = SPACING) -> MetaTensor:
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None],
                      affine=torch.diag(torch.tensor([spacing, spacing, 1.0], dtype=torch.float64)))


def median_error_mm(knee, truth: np.ndarray) -> float:
    return float(np.median(np.linalg.norm(knee.landmarks_px - truth, axis=1)) * SPACING)


@pytest.fixture(scope="module")
def predictor():
    return KneelPredictor(*default_model_dirs(), device="cpu")


@pytest.fixture(scope="module")
def bilateral():
    return generate_radiograph(7_200_001, knees=("R", "L"), spacing_mm=SPACING, size=(1600, 1900))


def test_a_lone_knee_on_its_half_is_found_once_and_its_side_comes_from_where_it_lies(predictor):
    sample = generate_radiograph(7_200_001, knees=("L",), spacing_mm=SPACING, size=(1600, 1900))
    result = predictor.predict_image(as_image(sample.image))
    left, right = result.knees["L"], result.knees["R"]
    assert left.present and not right.present
    assert left.side_source == "image_position" and "one knee" in right.reason
    assert median_error_mm(left, np.asarray(sample.knees["L"]["landmarks_px"])) < 1.5
    assert result.view["verdict"] == "ap_knee" and result.view["knees"] == 1
    assert result.detection["scanned"] and result.detection["scan_starts"] > 0


def test_a_centred_knee_gets_its_side_from_the_tag_then_the_anatomy_then_the_user(predictor, bilateral):
    truth = np.asarray(bilateral.knees["R"]["landmarks_px"])
    # a single-knee field: the right knee in the middle, the other leg cut off (edge-padded on the left)
    padded = np.pad(bilateral.image, ((0, 0), (600, 0)), mode="edge")
    x0 = int(truth[4][0])
    field = padded[:, x0:x0 + 1200]
    truth = truth + [600 - x0, 0]
    # the DICOM laterality tag is believed first, whatever the anatomy says
    tagged = as_image(field)
    tagged.meta["laterality"] = "L"
    result = predictor.predict_image(tagged)
    assert result.knees["L"].present and not result.knees["R"].present
    assert result.knees["L"].side_source == "dicom_laterality"
    # no tag: the anatomy decides, and for this right knee it says so clearly
    result = predictor.predict_image(as_image(field), single_knee_side="L")
    knee = result.knees["R"]
    assert knee.present and knee.side_source == "anatomy" and not result.knees["L"].present
    assert median_error_mm(knee, truth) < 1.5
    # when the anatomy cannot tell, the user's side is taken (here: forced by an unreachable margin)
    undecided = KneelPredictor(*default_model_dirs(), device="cpu", scan=ScanSettings(side_margin=1.0))
    result = undecided.predict_image(as_image(field), single_knee_side="L")
    assert result.knees["L"].present and result.knees["L"].side_source == "user"
    result = undecided.predict_image(as_image(field))
    guessed = next(k for k in result.knees.values() if k.present)
    assert guessed.side_source == "anatomy_uncertain" and guessed.quality == "check"
    assert any("side uncertain" in r for r in guessed.quality_reasons)


def test_no_knee_is_reported_on_images_without_one(predictor, bilateral):
    rng = np.random.default_rng(0)
    smooth = torch.nn.functional.avg_pool2d(torch.from_numpy(rng.normal(size=(1, 1200, 1400)).astype(np.float32)),
                                            31, 1, 15)[0].numpy()
    inverted = bilateral.image.max() - bilateral.image  # MONOCHROME1/2 mislabelled
    for name, array in (("texture", smooth), ("inverted", inverted)):
        result = predictor.predict_image(as_image(array))
        assert not any(k.present for k in result.knees.values()), name
        assert result.view["verdict"] == "no_ap_knee", name
        assert all("knee's shape" in k.reason for k in result.knees.values()), name
    blank = predictor.predict_image(as_image(np.full((600, 700), 7.0)))
    assert blank.view["verdict"] == "no_ap_knee" and "blank image" in blank.knees["R"].reason
    # the reasons survive the JSON round trip
    again = RadiographResult.from_dict(blank.to_dict())
    assert again.view == blank.view and again.knees["L"].reason == blank.knees["L"].reason


def test_both_knees_are_found_when_the_spacing_is_wrong(predictor, bilateral):
    """A JPEG read with a guessed spacing 30 % off: the knees are still found (the scan's zooms)."""
    result = predictor.predict_image(as_image(bilateral.image, SPACING * 1.3))
    for side in ("R", "L"):
        knee = result.knees[side]
        assert knee.present and knee.side_source == "image_position"
        assert median_error_mm(knee, np.asarray(bilateral.knees[side]["landmarks_px"])) < 1.5


def test_scan_helpers_keep_pixels_and_cover_the_image():
    image = as_image(np.zeros((500, 800)), 0.5)  # 250 × 400 mm
    starts = np.array(grid_starts(image, 70.0))
    assert len(starts) == 4 * 6
    assert starts[:, 0].min() > 0 and starts[:, 0].max() < 799 and starts[:, 1].max() < 499
    big = zoomed(image, 1.5)
    assert torch.equal(big.as_tensor(), image.as_tensor())
    assert float(big.affine[0, 0]) == pytest.approx(0.75) and len(grid_starts(big, 70.0)) > len(starts)
    with pytest.raises(ValueError, match="zooms"):
        ScanSettings(zooms=())
    from kneel_monai.detection import Candidate

    def cand(x, d):
        pts = np.zeros((16, 2)) + [x, 100.0]
        return Candidate("R", pts, np.full(16, 0.5), d)

    kept = distinct_knees([cand(100, 4.0), cand(110, 3.0), cand(400, 5.0), cand(405, float("inf"))], 0.5, 60.0)
    assert [c.shape_distance for c in kept] == [3.0, 5.0]
