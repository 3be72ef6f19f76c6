"""Knee detection with the shipped models: one knee anywhere, its side and how it was decided, no knee at all.

Synthetic radiographs give the truth (landmarks and sides); the real-film figures are in
docs/real_knees.md (``benchmarks/eval_full_radiographs.py``).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from kneel_monai.detection import (
    KNEE_SIZE_MM,
    PARTNER_SIZE_RATIO,
    Candidate,
    ScanSettings,
    distinct_knees,
    eased_partners,
    grid_starts,
    header_view,
    knee_size_mm,
    local_starts,
    mirrored_display,
    near_misses,
    off_centre_side,
    partner_searched,
    room_for_partner,
    size_zoom,
    zoomed,
)
from kneel_monai.inference import KneelPredictor, RadiographResult, default_model_dirs
from kneel_monai.io import describe_radiograph, read_radiograph
from kneel_monai.io.dicom_writer import write_dicom
from kneel_monai.model_io import load_model
from kneel_monai.synthetic.generate import generate_radiograph
from kneel_monai.transforms import points_between
from kneel_monai.transforms.array import pixel_spacing

SPACING = 0.2
SAMPLE_DCM = Path(__file__).resolve().parents[1] / "samples" / "synthetic_bilateral_knee.dcm"


def as_image(array: np.ndarray, spacing: float = SPACING) -> MetaTensor:
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None],
                      affine=torch.diag(torch.tensor([spacing, spacing, 1.0], dtype=torch.float64)))


def median_error_mm(knee, truth: np.ndarray) -> float:
    return float(np.median(np.linalg.norm(knee.landmarks_px - truth, axis=1)) * SPACING)


def centred_single_knee(bilateral):
    """A single-knee field: the right knee of the bilateral film in the middle, the other leg cut off."""
    truth = np.asarray(bilateral.knees["R"]["landmarks_px"])
    padded = np.pad(bilateral.image, ((0, 0), (600, 0)), mode="edge")
    x0 = int(truth[4][0])
    return padded[:, x0:x0 + 1200], truth + [600 - x0, 0]


def with_fibular_head(field: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The field with a fibular head drawn where real AP films show it: a 12 mm disc straddling the lateral
    tibial margin (landmark 0), a third of a plateau width below it, as bright as the tibia at that level."""
    width = np.linalg.norm(truth[8] - truth[0])
    cx, cy = truth[0][0], truth[0][1] + 0.33 * width
    bone = np.median(field[int(cy) - 5:int(cy) + 5, int(truth[4][0]) - 5:int(truth[4][0]) + 5])
    yy, xx = np.mgrid[:field.shape[0], :field.shape[1]]
    out = field.copy()
    out[(xx - cx) ** 2 + (yy - cy) ** 2 < (12.0 / SPACING) ** 2] = bone
    return out


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
    field, truth = centred_single_knee(bilateral)
    # the DICOM laterality tag is believed first, whatever the anatomy says
    tagged = as_image(field)
    tagged.meta["laterality"] = "L"
    result = predictor.predict_image(tagged)
    assert result.knees["L"].present and not result.knees["R"].present
    assert result.knees["L"].side_source == "dicom_laterality"
    # no tag: the anatomy decides. The synthetic fibular head lies behind the tibia, fainter than on real
    # films, so the fibula does not say "right" here: the side is a guess to check, with the reason
    result = predictor.predict_image(as_image(field))
    knee = next(k for k in result.knees.values() if k.present)
    evidence = result.detection["side_evidence"]
    assert knee.side_source == "anatomy_uncertain" and not evidence["sure"] and knee.quality == "check"
    assert any(evidence["why"] in r for r in knee.quality_reasons)
    # with the fibular head where real films show it (painted in, as bright as the tibia), the fibula and
    # the heat-maps agree: the side is the anatomy's, sure, and the record keeps both pieces of evidence
    painted = with_fibular_head(field, truth)
    result = predictor.predict_image(as_image(painted), single_knee_side="L")
    knee = result.knees["R"]
    assert knee.present and knee.side_source == "anatomy" and not result.knees["L"].present
    assert median_error_mm(knee, truth) < 1.5
    evidence = result.detection["side_evidence"]
    assert evidence["sure"] and evidence["side"] == "R" and evidence["fibula"] > 0.1 and evidence["why"] == ""
    assert evidence["confidence"]["R"] > evidence["confidence"]["L"]
    assert json.loads(json.dumps(result.to_dict()))["detection"]["side_evidence"] == evidence
    # the same knee mirrored is a left knee by its fibula; sure only where the heat-maps say so too (here the
    # knee is found at another zoom, and the mirrored heat-maps need not agree)
    mirrored = predictor.predict_image(as_image(painted[:, ::-1]))
    knee = mirrored.knees["L"]
    assert knee.present and not mirrored.knees["R"].present
    evidence = mirrored.detection["side_evidence"]
    assert evidence["side"] == "L" and evidence["fibula"] < -0.1
    heat_maps_agree = evidence["confidence"]["L"] > evidence["confidence"]["R"]
    assert knee.side_source == ("anatomy" if heat_maps_agree else "anatomy_uncertain")
    assert (knee.quality == "check") if not heat_maps_agree else True
    # mirroring the image mirrors the anatomy with it: landmark 0 stays the lateral margin, now on the right
    assert median_error_mm(knee, truth * [-1, 1] + [field.shape[1] - 1, 0]) < 1.5
    # when the anatomy cannot tell, the user's side is taken (here: forced by an unreachable margin)
    undecided = KneelPredictor(*default_model_dirs(), device="cpu", scan=ScanSettings(side_margin=1.0))
    result = undecided.predict_image(as_image(painted), single_knee_side="L")
    assert result.knees["L"].present and result.knees["L"].side_source == "user"
    result = undecided.predict_image(as_image(painted))
    guessed = next(k for k in result.knees.values() if k.present)
    assert guessed.side_source == "anatomy_uncertain" and guessed.quality == "check"
    assert any("side uncertain" in r for r in guessed.quality_reasons)


def test_a_lone_knee_off_centre_takes_its_side_from_its_place_only_where_a_second_knee_had_room(predictor,
                                                                                                   bilateral):
    """A right knee (its fibular head painted in, so its anatomy says right, sure) on the image's right half,
    where a bilateral film holds the left knee. In a field with no room beside it for a second knee its place
    says nothing: the anatomy decides. On a wide film the place would say left, but the anatomy, sure, says
    right: the anatomy's side, flagged with the reason."""
    field, truth = centred_single_knee(bilateral)
    painted = with_fibular_head(field, truth)
    x = int(truth[4][0])
    shifted = painted[:, :x + 220]  # the knee at about three quarters of the width, the field cut at its edge
    result = predictor.predict_image(as_image(shifted))
    knee, evidence = result.knees["R"], result.detection["side_evidence"]
    assert knee.present and not result.knees["L"].present and knee.side_source == "anatomy"
    assert evidence["position"] is None and evidence["sure"]  # no room for a second knee: no place to go by
    assert not any("against where the knee lies" in r for r in knee.quality_reasons)
    assert median_error_mm(knee, truth) < 1.5

    wide = np.pad(shifted, ((0, 0), (900, 0)), mode="edge")  # room on its left for another knee
    result = predictor.predict_image(as_image(wide))
    knee, evidence = result.knees["R"], result.detection["side_evidence"]
    assert knee.present and not result.knees["L"].present and knee.side_source == "anatomy"
    assert evidence["position"] == "L" and evidence["sure"] and evidence["side"] == "R"
    assert knee.quality == "check" and any("against where the knee lies" in r for r in knee.quality_reasons)
    assert median_error_mm(knee, truth + [900, 0]) < 1.5


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
        # the record says how close the most knee-like answer came, beyond the limit
        assert result.detection["best_shape_distance"] > predictor.scan.knee_shape_limit, name
        assert f"shape distance {result.detection['best_shape_distance']:.1f}" in result.knees["R"].reason, name
    blank = predictor.predict_image(as_image(np.full((600, 700), 7.0)))
    assert blank.view["verdict"] == "no_ap_knee" and "blank image" in blank.knees["R"].reason
    assert blank.detection["best_shape_distance"] is None and json.loads(json.dumps(blank.to_dict()))
    assert blank.detection["stage1_px"] is None  # stage 1 did not run
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


def test_a_knee_shown_too_small_is_found_by_re_zooming_it_to_its_size(predictor, bilateral):
    """A spacing guessed 45 % too small shows the network knees far smaller than it learnt: without the
    proposal zooms and the size re-zooming (and no scan to fall back on) no knee is found; with them
    both are, on their landmarks, and the chosen zoom follows the spacing's error."""
    without = KneelPredictor(*default_model_dirs(), device="cpu",
                             scan=ScanSettings(scan=False, proposal_zooms=(1.0,), size_rounds=0, near_miss_margin=0,
                                               fallback_roi=False))
    assert not any(k.present for k in without.predict_image(as_image(bilateral.image, SPACING * 0.55)).knees.values())
    proposals_only = KneelPredictor(*default_model_dirs(), device="cpu", scan=ScanSettings(scan=False))
    as_read = proposals_only.predict_image(as_image(bilateral.image))
    too_small = proposals_only.predict_image(as_image(bilateral.image, SPACING * 0.55))
    assert not too_small.detection["scanned"]
    for side in ("R", "L"):
        knee = too_small.knees[side]
        assert knee.present and knee.side_source == "image_position"
        assert median_error_mm(knee, np.asarray(bilateral.knees[side]["landmarks_px"])) < 1.5
        # the zoom makes up for most of the spacing's error (1 / 0.55 = 1.8)
        assert 1.4 < knee.roi_zoom / as_read.knees[side].roi_zoom < 2.6


def test_the_partner_of_one_knee_is_found_at_its_zoom_in_the_other_half(predictor, bilateral):
    """One knee found (here: given) off-centre; its partner is looked for in the other half, at its zoom."""
    norm = predictor._normalise(as_image(bilateral.image, SPACING * 0.6))
    work = predictor.working_image(norm)
    truth = {s: np.asarray(bilateral.knees[s]["landmarks_px"]) for s in ("R", "L")}
    start = points_between(truth["R"][4:5], norm.affine, work.affine)[0]
    right = predictor._resized(work, predictor._candidates(work, [("R", start, 1.6)], "stage1"))[0]
    assert predictor._believed(right, work)
    partners, starts = predictor._partner(work, right, "R")
    assert starts > 0 and all(c.orientation == "L" and c.centre[0] > work.shape[-1] / 2 for c in partners)
    best = min(partners, key=lambda c: c.shape_distance)
    assert predictor._believed(best, work)
    found = points_between(best.landmarks_px, work.affine, norm.affine)
    assert np.median(np.linalg.norm(found - truth["L"], axis=1)) * SPACING < 1.5


def test_knee_size_gives_the_zoom_and_off_centre_knees_their_side():
    rng = np.random.default_rng(3)
    knee = rng.normal(size=(16, 2))
    knee *= KNEE_SIZE_MM / knee_size_mm(knee)
    assert knee_size_mm(knee + [40.0, -7.0]) == pytest.approx(KNEE_SIZE_MM)
    assert size_zoom(knee * 0.8, (0.5, 2.5)) == pytest.approx(1.25)
    assert size_zoom(knee * 0.1, (0.5, 2.5)) == 2.5 and size_zoom(knee * 10, (0.5, 2.5)) == 0.5
    assert size_zoom(np.full((16, 2), np.nan), (0.5, 2.5)) == 1.0
    assert off_centre_side(100, 1001, 0.15) == "R" and off_centre_side(900, 1001, 0.15) == "L"
    assert off_centre_side(560, 1001, 0.15) is None
    with pytest.raises(ValueError, match="zoom_range"):
        ScanSettings(zoom_range=(1.2, 2.0))
    with pytest.raises(ValueError, match="proposal_zooms"):
        ScanSettings(proposal_zooms=(0.0,))


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
    def cand(x, d):
        pts = np.zeros((16, 2)) + [x, 100.0]
        return Candidate("R", pts, np.full(16, 0.5), d)

    kept = distinct_knees([cand(100, 4.0), cand(110, 3.0), cand(400, 5.0), cand(405, float("inf"))], 0.5, 60.0)
    assert [c.shape_distance for c in kept] == [3.0, 5.0]


def test_a_knee_is_believed_up_to_the_limits_and_not_beyond(predictor):
    """The presence rule itself: shape distance at most the limit, mean confidence at least min_confidence, all
    16 points on the image."""
    work = MetaTensor(torch.zeros(1, 400, 500), affine=torch.eye(3, dtype=torch.float64))
    points = np.stack([np.linspace(100, 400, 16), np.full(16, 200.0)], axis=1)
    limit, least = predictor.scan.knee_shape_limit, predictor.min_confidence

    def believed(distance=limit, confidence=least, pts=points):
        return predictor._believed(Candidate("R", pts, np.full(16, confidence), distance), work)

    assert believed()
    assert not believed(distance=limit + 1e-6)
    assert not believed(confidence=least - 1e-6)
    assert not believed(pts=points + [0, 210.0])  # the knee's points run off the image


class Stage1BesideTheKnees(KneelPredictor):
    """Stage 1 as on real bilateral films: its centres land beside the knees (here 45 mm below them)."""

    shift_mm = 45.0

    def knee_centres(self, image):
        centres, confidence = super().knee_centres(image)
        row_mm = pixel_spacing(image.affine)[0]
        return {s: c + [0.0, self.shift_mm / row_mm] for s, c in centres.items()}, confidence


class Stage1FarBelowTheKnees(Stage1BesideTheKnees):
    """The first ROI model's centres 65 mm below the knees: no answer from there is knee-shaped."""

    shift_mm = 65.0


def test_knees_beside_stage_1_are_found_by_looking_around_it_before_any_scan(bilateral):
    """A start 45 mm below a knee gives an answer off the joint; the local search around the proposal (no
    whole-image scan) finds both knees on their landmarks, and says so in the detection record."""
    image = as_image(bilateral.image)
    # stage 1 on the whole image is switched off too: this is about the halves' proposals; the ROI model is the
    # synthetic one (the shipped model's fallback, none of its own), whose centres lie where this test says
    synthetic_roi = load_model(default_model_dirs()[0]).fallback
    without = Stage1BesideTheKnees(synthetic_roi, default_model_dirs()[1], device="cpu",
                                   scan=ScanSettings(scan=False, local_steps=0, whole_image=False))
    missed = without.predict_image(image)
    assert not any(k.present for k in missed.knees.values()) and missed.detection["local_starts"] == 0
    local = Stage1BesideTheKnees(without.roi, without.landmarks, device="cpu",
                                 scan=ScanSettings(scan=False, whole_image=False))
    found = local.predict_image(image)
    assert found.detection["local_starts"] == 2 * 9 and not found.detection["scanned"]
    # where stage 1's own proposals are believed, nothing is looked around
    direct = KneelPredictor(without.roi, without.landmarks, device="cpu").predict_image(image).detection
    assert direct["local_starts"] == 0 and not direct["scanned"]
    for side in ("R", "L"):
        knee = found.knees[side]
        assert knee.present and knee.side_source == "image_position"
        assert median_error_mm(knee, np.asarray(bilateral.knees[side]["landmarks_px"])) < 1.5
        # the record says where stage 1 looked: 45 mm below the knee here, within 15 mm of it when not shifted
        truth = np.asarray(bilateral.knees[side]["landmarks_px"][4])
        beside = np.asarray(found.detection["stage1_px"][side]) - truth
        assert abs(beside[1] * SPACING - 45.0) < 15.0 and abs(beside[0] * SPACING) < 15.0
        assert np.linalg.norm(np.asarray(direct["stage1_px"][side]) - truth) * SPACING < 15.0
    assert json.loads(json.dumps(found.to_dict()))["detection"]["stage1_px"] == found.detection["stage1_px"]


def test_local_starts_surround_the_centre_in_millimetres_and_stay_on_the_image():
    image = MetaTensor(torch.zeros(1, 300, 400), affine=torch.diag(torch.tensor([0.5, 0.25, 1.0], dtype=torch.float64)))
    centre = np.array([200.0, 150.0])
    starts = np.array(local_starts(image, centre, 10.0, 1))
    assert len(starts) == 9 and np.array_equal(starts[0], centre)  # the centre itself first
    steps = np.unique(np.round(starts - centre, 6), axis=0)
    # the affine's first axis is the rows (0.5 mm), its second the columns (0.25 mm): 10 mm is 20 rows, 40 columns
    assert sorted({x for x, _ in steps}) == [-40.0, 0.0, 40.0] and sorted({y for _, y in steps}) == [-20.0, 0.0, 20.0]
    assert len(local_starts(image, centre, 10.0, 0)) == 1
    corner = np.array(local_starts(image, np.array([5.0, 5.0]), 10.0, 2))
    assert len(corner) == 9 and (corner >= -0.5).all()  # the grid's starts off the image are dropped
    with pytest.raises(ValueError, match="local_steps"):
        ScanSettings(local_steps=-1)
    with pytest.raises(ValueError, match="local_stride_mm"):
        ScanSettings(local_stride_mm=0.0)


def test_a_partner_is_looked_for_again_only_from_the_same_knee_at_another_zoom():
    def knee(x, zoom):
        return Candidate("R", np.zeros((16, 2)) + [x, 200.0], np.full(16, 0.5), 4.0, zoom)

    searched = [knee(100.0, 1.25)]
    assert partner_searched(knee(110.0, 1.25), searched, 0.5, 60.0)  # 5 mm away, same zoom: done
    assert partner_searched(knee(110.0, 1.27), searched, 0.5, 60.0)  # within 5 % of the zoom
    assert not partner_searched(knee(110.0, 1.8), searched, 0.5, 60.0)  # the same knee at another zoom: again
    assert not partner_searched(knee(300.0, 1.25), searched, 0.5, 60.0)  # 100 mm away: another knee
    assert not partner_searched(knee(110.0, 1.25), [], 0.5, 60.0)


class HalvesFarFromTheKnee(KneelPredictor):
    """Stage 1's halves as on a real single-knee film: their centres far off the knee (here the top corners)."""

    def knee_centres(self, image):
        _, confidence = super().knee_centres(image)
        h, w = image.shape[-2:]
        return {"R": np.array([0.25 * w, 0.05 * h]), "L": np.array([0.75 * w, 0.05 * h])}, confidence


def test_a_knee_alone_in_the_field_is_found_without_a_scan_for_a_second_one(predictor, bilateral):
    """A single-knee field: once its knee is found there is no room beside it for another, so the image is not
    scanned (scanning anyway gives the same knee). When the halves' proposals miss it, stage 1 on the whole image
    finds it."""
    field, truth = centred_single_knee(bilateral)
    field = with_fibular_head(field, truth)  # so that the anatomy names the side (see above)
    result = predictor.predict_image(as_image(field))
    knee = result.knees["R"]
    assert knee.present and not result.knees["L"].present and knee.side_source == "anatomy"
    assert median_error_mm(knee, truth) < 1.5 and not result.detection["scanned"]
    always_scan = KneelPredictor(predictor.roi, predictor.landmarks, device="cpu", scan=ScanSettings(partner_room=0))
    scanned = always_scan.predict_image(as_image(field))
    assert scanned.detection["scanned"] and scanned.knees["R"].present
    assert median_error_mm(scanned.knees["R"], knee.landmarks_px) < 1.0

    missed = HalvesFarFromTheKnee(predictor.roi, predictor.landmarks, device="cpu",
                                  scan=ScanSettings(scan=False, local_steps=0, whole_image=False, fallback_roi=False))
    assert not any(k.present for k in missed.predict_image(as_image(field)).knees.values())
    whole = HalvesFarFromTheKnee(predictor.roi, predictor.landmarks, device="cpu")
    found = whole.predict_image(as_image(field))
    assert found.detection["whole_image"] and not found.detection["scanned"] and found.detection["local_starts"] == 0
    assert found.knees["R"].present and median_error_mm(found.knees["R"], truth) < 1.5


def test_room_for_a_second_knee_is_counted_in_plateau_widths():
    pts = np.zeros((16, 2)) + [150.0, 100.0]
    pts[0, 0], pts[8, 0] = 100.0, 200.0  # a 100 px plateau; landmark 4 (the centre) at x = 150
    knee = Candidate("R", pts, np.full(16, 0.5), 3.0)
    assert not room_for_partner(knee, 300, 2.0)  # 150 px on either side: 1.5 plateau widths
    assert room_for_partner(knee, 360, 2.0)  # 209.5 px on the right
    assert room_for_partner(knee, 300, 1.5) and room_for_partner(knee, 300, 0.0)
    with pytest.raises(ValueError, match="partner_room"):
        ScanSettings(partner_room=-1.0)


def test_a_dicom_header_that_says_lateral_or_oblique_is_no_ap_knee_without_running_the_models(predictor, tmp_path):
    assert (header_view("LL"), header_view(" rl "), header_view("RLO"), header_view("LATERAL")) == (
        "lateral", "lateral", "oblique", "lateral")
    assert header_view("PA") is None and header_view("AP") is None and header_view(None) is None
    assert header_view("RLD") is None  # decubitus: an AP/PA projection of a lying patient
    sample = read_radiograph(SAMPLE_DCM)
    pixels = np.asarray(sample[0].numpy(), dtype=np.uint16)
    spacing = tuple(float(v) for v in pixel_spacing(sample.affine))
    ap = write_dicom(tmp_path / "ap.dcm", pixels, spacing)  # the writer's ViewPosition: PA
    lateral = write_dicom(tmp_path / "lateral.dcm", pixels, spacing, extra_tags={"ViewPosition": "LL"})
    assert describe_radiograph(lateral)["view_position"] == "LL"

    result = predictor.predict_file(lateral)
    assert not any(k.present for k in result.knees.values())
    assert result.view == {"verdict": "no_ap_knee", "knees": 0, "view_position": "LL",
                           "reason": result.knees["R"].reason}
    assert "ViewPosition LL" in result.knees["R"].reason and "lateral" in result.knees["R"].reason
    assert result.detection["header_view_check"] and result.detection["scan_starts"] == 0
    assert "detect" not in result.timings_s  # refused before any model ran
    # the same pixels with an AP/PA header: both knees, and the view position recorded
    found = predictor.predict_file(ap)
    assert all(k.present for k in found.knees.values()) and found.view["view_position"] == "PA"
    # a user who knows the header is wrong looks anyway
    anyway = KneelPredictor(predictor.roi, predictor.landmarks, device="cpu",
                            scan=ScanSettings(header_view_check=False)).predict_file(lateral)
    assert all(k.present for k in anyway.knees.values()) and anyway.view["view_position"] == "LL"
    for side in ("R", "L"):
        assert np.allclose(anyway.knees[side].landmarks_px, found.knees[side].landmarks_px)


def test_a_mirrored_display_is_read_back_to_the_radiological_convention(predictor, tmp_path):
    """PatientOrientation R\\F: columns run to the patient's right, so the patient's right knee is on the image's
    right. The sample mirrored and tagged so gives each knee on the patient's side, at its mirrored pixels."""
    assert mirrored_display("R\\F") and mirrored_display("RA\\F")
    assert not mirrored_display("L\\F") and not mirrored_display(None) and not mirrored_display("A\\F")
    sample = read_radiograph(SAMPLE_DCM)
    pixels = np.asarray(sample[0].numpy(), dtype=np.uint16)
    spacing = tuple(float(v) for v in pixel_spacing(sample.affine))
    width = pixels.shape[1]
    original = predictor.predict_file(SAMPLE_DCM)
    mirrored = write_dicom(tmp_path / "mirrored.dcm", pixels[:, ::-1], spacing,
                           extra_tags={"PatientOrientation": ["R", "F"]})
    assert describe_radiograph(mirrored)["patient_orientation"] == "R\\F"
    result = predictor.predict_file(mirrored)
    assert result.detection["mirrored_display"] and not original.detection["mirrored_display"]
    for side in ("R", "L"):
        knee, before = result.knees[side], original.knees[side]
        assert knee.present and knee.side_source == "image_position"
        # the patient's right knee is now on the image's right, each landmark at its mirrored pixel
        expected = before.landmarks_px * [-1, 1] + [width - 1, 0]
        assert np.abs(knee.landmarks_px - expected).max() < 0.5, side
        assert np.allclose(knee.landmarks_mm, knee.landmarks_px * spacing[::-1])
        assert knee.measurements == pytest.approx(before.measurements, abs=0.05)
    assert result.knees["R"].landmarks_px[:, 0].mean() > width / 2
    # the same pixels without the tag (or with the tag ignored): the image's left knee is taken for the right one
    untagged = write_dicom(tmp_path / "untagged.dcm", pixels[:, ::-1], spacing)
    for ignored in (predictor.predict_file(untagged),
                    KneelPredictor(predictor.roi, predictor.landmarks, device="cpu",
                                   scan=ScanSettings(follow_patient_orientation=False)).predict_file(mirrored)):
        assert not ignored.detection["mirrored_display"]
        assert ignored.knees["R"].landmarks_px[:, 0].mean() < width / 2
        # the same knee (the two are hundreds of pixels apart), run as the other side's
        assert np.abs(ignored.knees["R"].landmarks_px[4] - result.knees["L"].landmarks_px[4]).max() < 5


class RecordsBothOrientations(KneelPredictor):
    """The shipped predictor, noting what stage 2 gave when a lone knee was run in both orientations."""

    def _as_sides(self, work, starts):
        answers = super()._as_sides(work, starts)
        if sorted(s for s, _, _ in starts) == ["L", "R"]:
            self.starts, self.both = starts, {s: a for (s, _, _), a in zip(starts, answers)}
        return answers


def test_a_lone_knee_s_side_compares_both_orientations_run_alike(predictor, bilateral):
    """The heat-maps' side comes from one run of each orientation from the same place and zoom — not from the
    answer the search found (the best of many starts, in whichever orientation) against one run of the other,
    which called 58 of 433 real crops' sides wrongly in 0.4.3."""
    field, truth = centred_single_knee(bilateral)
    recorder = RecordsBothOrientations(predictor.roi, predictor.landmarks, device="cpu")
    for image in (with_fibular_head(field, truth), field, field[:, ::-1].copy()):
        evidence = recorder.predict_image(as_image(image)).detection["side_evidence"]
        runs, (first, second) = recorder.both, recorder.starts
        assert np.array_equal(first[1], second[1]) and first[2] == second[2]  # the same place and zoom
        assert evidence["confidence"] == {s: round(float(runs[s].mean_confidence), 4) for s in ("R", "L")}


def test_near_misses_are_the_answers_just_beyond_the_limit_once_per_place_and_orientation():
    def answer(x, distance, orientation="R"):
        return Candidate(orientation, np.zeros((16, 2)) + [x, 200.0], np.full(16, 0.5), distance, 1.0)

    answers = [answer(100.0, 6.4), answer(110.0, 6.2), answer(100.0, 6.3, "L"), answer(300.0, 7.4),
               answer(500.0, 5.9), answer(700.0, 7.6), answer(900.0, float("inf"))]
    near = near_misses(answers, 6.0, 1.5, [], mm_per_px=0.5)
    # 6.2 and 6.4 lie 5 mm apart in one orientation: one place, its best kept; the L answer there is another
    assert [(c.orientation, c.shape_distance) for c in near] == [("R", 6.2), ("L", 6.3), ("R", 7.4)]
    assert [c.shape_distance for c in near_misses(answers, 6.0, 1.5, near[:1], 0.5)] == [6.3, 7.4]  # swept: once
    assert near_misses(answers, 6.0, 0.0, [], 0.5) == [] and near_misses(answers, None, 1.5, [], 0.5) == []
    with pytest.raises(ValueError, match="near_miss_margin"):
        ScanSettings(near_miss_margin=-1.0)


def test_an_eased_partner_is_a_partner_search_answer_just_beyond_the_limit_on_the_other_half_of_a_like_size():
    shape = np.random.default_rng(5).normal(size=(16, 2)) * 20.0

    def answer(x, distance, orientation="L", source="partner", scale=1.0):
        return Candidate(orientation, shape * scale + [x, 200.0], np.full(16, 0.5), distance, 1.0, source)

    knee = answer(150.0, 4.0, "R", "scan")  # the right knee of a film 1000 px wide, on the image's left
    best, other = answer(800.0, 6.2), answer(700.0, 7.1)
    answers = [knee, other, best,
               answer(820.0, 5.9),  # within the limit: believed as any knee is, not eased
               answer(800.0, 7.6),  # beyond the margin
               answer(800.0, 6.1, source="scan"),  # not the partner search's
               answer(800.0, 6.1, orientation="R"),  # not seen as the other side's knee
               answer(420.0, 6.1),  # on the knee's own half
               answer(800.0, 6.1, scale=PARTNER_SIZE_RATIO * 1.05), answer(800.0, 6.1, scale=0.75)]  # sizes unlike
    assert eased_partners(knee, answers, "L", 6.0, 1.5, 1000, 0.5, 60.0) == [best, other]
    assert eased_partners(knee, answers, "L", 6.0, 0.0, 1000, 0.5, 60.0) == []
    assert eased_partners(knee, answers, "L", None, 1.5, 1000, 0.5, 60.0) == []
    inner, beside = answer(460.0, 4.0, "R", "scan"), answer(520.0, 6.2)  # 30 mm apart, across the middle
    assert eased_partners(inner, [beside], "L", 6.0, 1.5, 1000, 0.5, 60.0) == []  # the same knee, not its partner
    assert eased_partners(inner, [beside], "L", 6.0, 1.5, 1000, 0.5, 20.0) == [beside]
    with pytest.raises(ValueError, match="partner_margin"):
        ScanSettings(partner_margin=-0.1)


def test_the_other_knee_of_a_bilateral_film_is_believed_with_an_eased_shape_limit_and_flagged(bilateral):
    """With the shape limit set between the film's two knees (left 3.1, right 3.6 as the shipped models see them)
    only the left knee is believed on its own; its partner search finds the right knee just beyond the limit.
    Eased, that knee is reported — on its landmarks, flagged ``check`` with the reason, and recorded."""
    def predictor(margin, least=0.1):
        return KneelPredictor(*default_model_dirs(), device="cpu", scan=ScanSettings(
            knee_shape_limit=3.3, near_miss_margin=0.0, scan=False, partner_margin=margin,
            partner_min_confidence=least))

    image = as_image(bilateral.image)
    alone = predictor(0.0).predict_image(image)
    assert alone.knees["L"].present and not alone.knees["R"].present
    assert alone.detection["partner_starts"] > 0 and alone.detection["eased_partner"] is None
    both = predictor(1.0).predict_image(image)
    assert both.detection["eased_partner"] == "R" and both.view["knees"] == 2
    right, left = both.knees["R"], both.knees["L"]
    assert right.present and 3.3 < right.shape_distance <= 4.3 and right.side_source == "image_position"
    assert median_error_mm(right, np.asarray(bilateral.knees["R"]["landmarks_px"])) < 1.5
    assert right.quality == "check" and any("other knee of a bilateral film" in r for r in right.quality_reasons)
    assert not any("other knee" in r for r in left.quality_reasons)
    assert np.array_equal(left.landmarks_px, alone.knees["L"].landmarks_px)  # the knee found alone is unchanged
    unsure = predictor(1.0, least=float(np.mean(right.confidence)) + 0.01).predict_image(image)  # heat-maps too flat
    assert not unsure.knees["R"].present and unsure.detection["eased_partner"] is None
    with pytest.raises(ValueError, match="partner_min_confidence"):
        ScanSettings(partner_min_confidence=1.5)


def test_knees_shown_too_large_are_found_by_trying_the_near_misses_at_every_zoom(bilateral):
    """A spacing guessed twice too large shows the knees twice as large: at the proposals' one zoom their answers
    lie just beyond the shape limit, and with no other help (no re-zooming, search or fallback) nothing is found.
    Trying those near misses at every zoom finds both knees, on their landmarks, at the zoom that shrinks them."""
    def predictor(margin):
        return KneelPredictor(*default_model_dirs(), device="cpu", scan=ScanSettings(
            scan=False, proposal_zooms=(1.0,), size_rounds=0, local_steps=0, whole_image=False, fallback_roi=False,
            near_miss_margin=margin))

    image = as_image(bilateral.image, SPACING * 2.0)
    missed = predictor(0.0).predict_image(image)
    assert not any(k.present for k in missed.knees.values()) and missed.detection["sweep_starts"] == 0
    assert 6.0 < missed.detection["best_shape_distance"] <= 7.5  # near misses, not far ones
    found = predictor(1.5).predict_image(image)
    assert found.detection["sweep_starts"] == 2 * 4  # two places, the scan's four zooms (1.0 among them)
    for side in ("R", "L"):
        knee = found.knees[side]
        assert knee.present and knee.roi_zoom == 0.75
        truth = np.asarray(bilateral.knees[side]["landmarks_px"])
        assert float(np.median(np.linalg.norm(knee.landmarks_px - truth, axis=1))) * SPACING < 1.5


def test_the_fallback_roi_model_proposes_where_the_first_one_misses(bilateral):
    """The shipped ROI model names a fallback (the synthetic one); with the first model's centres 65 mm below the
    knees and no search, the fallback's own proposals find both knees, and the record says where it looked."""
    assert KneelPredictor(*default_model_dirs(), device="cpu").roi.fallback is not None
    image = as_image(bilateral.image)
    settings = {"scan": False, "local_steps": 0, "whole_image": False}
    first_only = Stage1FarBelowTheKnees(*default_model_dirs(), device="cpu",
                                        scan=ScanSettings(**settings, fallback_roi=False)).predict_image(image)
    assert not any(k.present for k in first_only.knees.values()) and first_only.detection["fallback_stage1_px"] is None
    found = Stage1FarBelowTheKnees(*default_model_dirs(), device="cpu",
                                   scan=ScanSettings(**settings)).predict_image(image)
    for side in ("R", "L"):
        knee, truth = found.knees[side], np.asarray(bilateral.knees[side]["landmarks_px"])
        assert knee.present and median_error_mm(knee, truth) < 1.5
        assert np.linalg.norm(np.asarray(found.detection["fallback_stage1_px"][side]) - truth[4]) * SPACING < 15.0
    # where the first model's proposals are believed the fallback is not run
    direct = KneelPredictor(*default_model_dirs(), device="cpu").predict_image(image)
    assert direct.detection["fallback_stage1_px"] is None
