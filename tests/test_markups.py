"""Slicer markups files: schema-valid, labelled, and positions that round-trip to the pixel."""

import json

import jsonschema  # noqa: E402
import numpy as np
import pytest

from kneel_monai.inference import KneeResult, RadiographResult
from kneel_monai.io.markups import (
    MARKUPS_SCHEMA_URL,
    lps_to_pixels,
    markups_dict,
    pixels_to_lps,
    read_markups,
    write_markups,
)
from kneel_monai.landmarks import LANDMARKS


def make_result(left_present=True, spacing=(0.143, 0.139), seed=0):
    rng = np.random.default_rng(seed)
    h, w = 2500, 2048
    knees = {}
    for side in ("R", "L"):
        if side == "L" and not left_present:
            knees[side] = KneeResult(side, False, centre_px=np.array([1500.0, 1200.0]),
                                     reason="no knee found (mean landmark confidence 0.010 < 0.05)")
            continue
        pts = np.column_stack([rng.uniform(0, w - 1, 16), rng.uniform(0, h - 1, 16)])
        knees[side] = KneeResult(side, True, pts, None, rng.uniform(0, 1, 16), pts[4])
    return RadiographResult("knee.dcm", (h, w), spacing, "ImagerPixelSpacing", knees)


def test_schema_valid_labels_and_colours(tmp_path, markups_schema):
    result = make_result()
    path = write_markups(result, tmp_path / "knee.mrk.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.validate(data, markups_schema)
    assert data["@schema"] == MARKUPS_SCHEMA_URL
    assert [m["name"] for m in data["markups"]] == ["Right knee", "Left knee"]
    for markup in data["markups"]:
        assert markup["type"] == "Fiducial" and markup["coordinateSystem"] == "LPS"
        assert markup["fixedNumberOfControlPoints"] is True and markup["locked"] is True
        points = markup["controlPoints"]
        assert [p["label"] for p in points] == [lm.label for lm in LANDMARKS]
        assert points[4]["label"] == "T4 tibial centre"
        # tibia drawn in the selected colour (red), femur in the unselected colour (green)
        assert [p["selected"] for p in points] == [lm.bone == "tibia" for lm in LANDMARKS]
        assert markup["display"]["selectedColor"] == [1.0, 0.0, 0.0]
        assert markup["display"]["color"] == [0.0, 0.8, 0.0]
        assert all(p["description"].startswith(lm.bone) for p, lm in zip(points, LANDMARKS))
        assert all(p["position"][2] == 0.0 for p in points)


def test_positions_round_trip(tmp_path, markups_schema):
    result = make_result(spacing=(0.2, 0.15))
    path = write_markups(result, tmp_path / "knee.mrk.json")
    back = read_markups(path)
    for side in ("R", "L"):
        np.testing.assert_allclose(back[side], result.knees[side].landmarks_px, rtol=0, atol=1e-6)
    # LPS millimetres: column × column spacing, row × row spacing
    data = json.loads(path.read_text(encoding="utf-8"))
    pos = np.array([p["position"] for p in data["markups"][0]["controlPoints"]])
    px = result.knees["R"].landmarks_px
    np.testing.assert_allclose(pos[:, 0], px[:, 0] * 0.15, atol=1e-9)
    np.testing.assert_allclose(pos[:, 1], px[:, 1] * 0.2, atol=1e-9)
    np.testing.assert_allclose(lps_to_pixels(pixels_to_lps(px, (0.2, 0.15)), (0.2, 0.15)), px, atol=1e-9)


def test_absent_knee_and_ras_file(tmp_path, markups_schema):
    result = make_result(left_present=False)
    data = markups_dict(result)
    jsonschema.validate(data, markups_schema)
    assert [m["name"] for m in data["markups"]] == ["Right knee"]
    assert "L" in data["kneel"]["absent_knees"]
    # the same file saved by Slicer in RAS reads back to the same pixels
    for cp in data["markups"][0]["controlPoints"]:
        x, y, z = cp["position"]
        cp["position"] = [-x, -y, z]
    data["markups"][0]["coordinateSystem"] = "RAS"
    path = tmp_path / "ras.mrk.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    back = read_markups(path)
    assert back["L"] is None
    np.testing.assert_allclose(back["R"], result.knees["R"].landmarks_px, atol=1e-6)


def test_bad_spacing_is_an_error(tmp_path):
    result = make_result(spacing=(0.0, 0.1))
    with pytest.raises(ValueError, match="pixel spacing"):
        write_markups(result, tmp_path / "x.mrk.json")
    assert not (tmp_path / "x.mrk.json").exists()
