"""Label checks and conversion (``kneel_monai.label``) without a server: ids, malformed labels, pixel round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from label_server import require_monailabel, stock_client_label

from kneel_monai.inference import KneeResult, RadiographResult
from kneel_monai.io.markups import markups_dict
from kneel_monai.label import LabelError, check_id, epistemic_score, label_to_pixels, parse_label

SPACING = (0.3, 0.25)
SIZE = (1100, 1300)


def result(knees=("R", "L"), seed=0) -> RadiographResult:
    rng = np.random.default_rng(seed)
    out = {}
    for side in ("R", "L"):
        if side in knees:
            pts = rng.uniform([50, 50], [1250, 1050], size=(16, 2))
            out[side] = KneeResult(side, True, landmarks_px=pts, confidence=np.full(16, 0.9))
        else:
            out[side] = KneeResult(side, False, reason="no knee found")
    return RadiographResult("x.dcm", SIZE, SPACING, "test", out)


def test_pixels_round_trip_exactly_through_lps_and_ras():
    res = result()
    data = markups_dict(res)
    px = label_to_pixels(parse_label(json.dumps(data)), SPACING, SIZE)
    for side in ("R", "L"):
        np.testing.assert_allclose(px[side], res.knees[side].landmarks_px, atol=1e-9)
    for markup in data["markups"]:  # the same points written in RAS by Slicer
        markup["coordinateSystem"] = "RAS"
        for cp in markup["controlPoints"]:
            cp["position"] = [-cp["position"][0], -cp["position"][1], cp["position"][2]]
    px = label_to_pixels(parse_label(data), SPACING, SIZE)
    np.testing.assert_allclose(px["L"], res.knees["L"].landmarks_px, atol=1e-9)


def test_points_matched_by_label_not_order():
    res = result()
    data = markups_dict(res)
    data["markups"][0]["controlPoints"].reverse()
    px = label_to_pixels(parse_label(data), SPACING, SIZE)
    np.testing.assert_allclose(px["R"], res.knees["R"].landmarks_px, atol=1e-9)


@pytest.mark.parametrize("bad_id", ["../etc", "a/b", "..", "", "a\\b", ".hidden", "x" * 300])
def test_bad_ids(bad_id):
    with pytest.raises(LabelError) as info:
        check_id(bad_id)
    assert info.value.status == 400


def _mutate(fn):
    data = markups_dict(result())
    fn(data)
    return data


@pytest.mark.parametrize("content,status,words", [
    (b"{not json", 400, "not JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (_mutate(lambda d: d.pop("@schema")), 422, "@schema"),
    (_mutate(lambda d: d["markups"][0]["controlPoints"].pop()), 422, "15 control points"),
    (_mutate(lambda d: d["markups"][0].update(type="Curve")), 422, "Fiducial"),
    (_mutate(lambda d: d["markups"][0]["controlPoints"][3].update(position=[1, "a", 0])), 422, "position"),
    (_mutate(lambda d: d["markups"].pop(1)), 422, "only one knee"),
    (_mutate(lambda d: d["markups"].append(d["markups"][0])), 422, "twice"),
    (_mutate(lambda d: d["markups"][0]["controlPoints"][2].update(positionStatus="undefined")), 422, "not placed"),
])
def test_bad_labels(content, status, words):
    with pytest.raises(LabelError) as info:
        parse_label(content if isinstance(content, bytes) else json.dumps(content))
    assert info.value.status == status and words in str(info.value)


@pytest.mark.parametrize("boxes, words", [(2, "markup 0 is a box (ROI)"), (0, "label holds no markup")])
def test_the_stock_monailabel_client_gets_told_what_to_do(tmp_path, boxes, words):
    """Its detection path can only send boxes (or nothing); the answer says why it cannot work and what does."""
    with pytest.raises(LabelError) as info:
        parse_label(stock_client_label(tmp_path, boxes))
    assert info.value.status == 422
    assert words in str(info.value) and "Kneel Landmarks module" in str(info.value)


def test_one_knee_marked_absent_is_accepted():
    data = markups_dict(result(knees=("R",)))
    label = parse_label(data)
    assert label["L"] is None and label.absent == {"L": "no knee found"}


def test_label_for_another_image_is_rejected():
    label = parse_label(markups_dict(result()))
    with pytest.raises(LabelError, match="spacing"):
        label_to_pixels(label, (0.15, 0.15), SIZE)
    with pytest.raises(LabelError, match="outside"):
        label_to_pixels(label, SPACING, (300, 300))


def test_epistemic_score():
    knees = {"R": {"present": True, "spread_mm": [1.0] * 16}, "L": {"present": True, "spread_mm": [3.0] * 16}}
    assert epistemic_score({"knees": knees}) == pytest.approx(2.0)
    assert epistemic_score({"knees": {"R": {"present": False, "spread_mm": None}}}) == float("inf")


def test_fine_tuning_keeps_each_models_own_stage(tmp_path):
    """The train task fine-tunes a model at the stage it was trained at; a model at no known stage is refused."""
    import shutil

    require_monailabel()
    from kneel_monai.inference import resolve_model_dirs
    from kneel_monai.label.server import stage_of
    from kneel_monai.training.stages import STAGES

    roi, landmarks = resolve_model_dirs(None)
    assert (stage_of(roi), stage_of(landmarks)) == ("roi_cpu_clahe", "landmarks_cpu_roi_scaled")  # the shipped models
    assert stage_of(roi.parent / "roi_synthetic") == "roi_cpu"  # the ROI model's fallback
    other = tmp_path / "model"
    shutil.copytree(landmarks, other)
    cfg = json.loads((other / "model.json").read_text())
    cfg["preprocessing"]["intensity"].pop("region")  # the same without the ROI scaling: 0.3.0's stage
    (other / "model.json").write_text(json.dumps(cfg))
    assert stage_of(other) == "landmarks_cpu_clahe"
    cfg["preprocessing"].pop("local_contrast")  # and without CLAHE: 0.2.0's stage
    (other / "model.json").write_text(json.dumps(cfg))
    assert stage_of(other) == "landmarks_cpu"
    paper = STAGES["landmarks"]
    cfg["preprocessing"].update(spacing_mm=paper.spacing_mm, pad_size=paper.pad_size, crop_size=paper.crop_size)
    (other / "model.json").write_text(json.dumps(cfg))
    assert stage_of(other) == "landmarks"  # e.g. the paper-configuration model trained on a GPU
    cfg["preprocessing"]["spacing_mm"] = 0.45
    (other / "model.json").write_text(json.dumps(cfg))
    with pytest.raises(LabelError, match="matches no training stage") as info:
        stage_of(other)
    assert info.value.status == 409


def test_the_monailabel_private_parts_the_app_relies_on_are_checked(monkeypatch):
    """The installed MONAI Label passes the check; another release, or one lacking a private name, fails loudly."""
    from kneel_monai.label import monailabel_private as private

    private.check_monailabel()
    monkeypatch.setattr(private, "SUPPORTED_MONAILABEL", "0.0.1")
    with pytest.raises(ImportError, match="relies on private parts of 0.0.1"):
        private.check_monailabel()
    monkeypatch.undo()
    monkeypatch.setattr(private, "PRIVATE_NAMES", private.PRIVATE_NAMES + (
        ("monailabel.datastore.local", "LocalDatastore", "_a_name_no_release_has"),))
    with pytest.raises(ImportError, match="LocalDatastore._a_name_no_release_has"):
        private.check_monailabel()


def test_the_app_keeps_its_models_outside_the_studies_by_default(tmp_path, monkeypatch):
    require_monailabel()
    from kneel_monai.label.server import default_state_dir

    monkeypatch.chdir(tmp_path)
    studies = tmp_path / "studies"
    state = default_state_dir(str(studies))
    assert studies not in state.parents and state.parent == Path.home() / ".cache" / "kneel-monai" / "label"
    assert default_state_dir("studies") == state  # however the folder is spelled
    assert default_state_dir(str(tmp_path / "other")) != state
    assert default_state_dir("http://pacs:8042/dicom-web") != state
