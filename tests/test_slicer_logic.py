"""The Kneel Landmarks Slicer module's logic, headless, on Slicer's real MRML classes (``slicer-core``).

A synthetic radiograph becomes a volume node with a non-trivial IJK→RAS (anisotropic spacing, an
oblique direction, an origin away from 0); the logic puts the shipped model's landmarks on it as
markups; the checks of ``KneelLandmarksLib.testing`` — the same the module's self-test runs inside
Slicer — and a few more look at the nodes, the table, the saved files, the background process and
the spacing trap. Without slicer-core the module is skipped (a failure under CI).
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO_ROOT / "KneelSlicerExtension" / "KneelLandmarks"


def _missing(message: str) -> None:
    """Skip locally, fail under CI: a missing test dependency must not pass silently there."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


try:
    from slicer import vtkMRMLScene  # Slicer's MRML classes, from slicer-core
except ImportError as err:
    _missing(f"slicer-core is not installed ({err}); pip install -e '.[slicer]'")

import jsonschema
import torch
import vtk

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from KneelLandmarksLib import (
    CANCELLED,
    DONE,
    FAILED,
    KneelInputError,
    LandmarksLogic,
    pixels_to_ras,
)
from KneelLandmarksLib import results as rn
from KneelLandmarksLib import testing as kt
from KneelLandmarksLib.geometry import ijk_to_ras_matrix
from KneelLandmarksLib.runner import _running_message
from KneelLandmarksLib.volume import check_spacing, describe_source, dicom_view_tags, write_nrrd

from kneel_monai.cohort import COHORT_COLUMNS, cohort_rows
from kneel_monai.inference import KneelPredictor, default_model_dirs
from kneel_monai.io import read_radiograph
from kneel_monai.measurements import knee_measurements
from kneel_monai.synthetic.generate import generate_radiograph, write_radiograph

SEED = 9_100_002  # a held-out synthetic radiograph (never used in training)


TORCH_THREADS = 2  # see conftest.torch_threads


@pytest.fixture(scope="module")
def predictor():
    return KneelPredictor(*default_model_dirs(), device="cpu")


@pytest.fixture(scope="module")
def predicted(predictor):
    """A scene with the synthetic radiograph, the checked request and the in-process prediction."""
    scene = vtkMRMLScene()
    logic = LandmarksLogic(scene, warm=False)  # the one-shot `kneel predict` path (the warm one: tests below)
    volume, sample = kt.synthetic_knee_volume(scene, SEED)
    request = logic.prepare(volume, device="cpu")
    prediction = logic.predict_in_process(request, predictor)
    return {"scene": scene, "logic": logic, "volume": volume, "sample": sample, "request": request,
            "prediction": prediction}


@pytest.fixture()
def results(predicted):
    """Fresh result nodes (Apply again replaces the earlier ones of the volume)."""
    return predicted["logic"].add_results(predicted["request"], predicted["prediction"])


# --------------------------------------------------------------------------- the landmarks on the image
def test_the_volume_geometry_is_not_trivial(predicted):
    matrix = ijk_to_ras_matrix(predicted["volume"])
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    assert not np.isclose(spacing[0], spacing[1])  # anisotropic pixels
    assert np.abs(matrix[:3, :3] / spacing - np.diag([-1, -1, 1])).max() > 0.3  # oblique, not LPS/RAS axes
    assert np.linalg.norm(matrix[:3, 3]) > 10  # origin away from 0


def test_fiducials_sit_on_the_ground_truth_in_ras(predicted, results):
    errors = kt.check_landmarks_on_truth(results, predicted["volume"], predicted["sample"])
    assert set(errors) == {"R", "L"}
    # and the mapping itself is exact: each point is the predicted pixel through IJK→RAS
    matrix = ijk_to_ras_matrix(predicted["volume"])
    for side, node in results.knees.items():
        expected = pixels_to_ras(predicted["prediction"]["knees"][side]["landmarks_px"], matrix)
        assert np.allclose(kt.control_point_positions(node), expected, atol=1e-6)


def test_the_measurements_table_has_a_row_per_measurement_and_a_column_per_knee(predicted, results):
    table_node = results.table
    table = table_node.GetTable()
    headers = [table.GetColumnName(i) if not table_node.GetUseColumnTitleAsColumnHeader()
               else table_node.GetColumnTitle(table.GetColumnName(i)) for i in range(table.GetNumberOfColumns())]
    assert headers == ["Measurement", "Unit", "Right knee", "Left knee"]
    assert [table.GetValue(r, 0).ToString() for r in range(table.GetNumberOfRows())] == [
        "lateral joint space width", "medial joint space width", "tibial plateau width", "femoral condyle width",
        "joint-line angle"]
    assert [table.GetValue(r, 1).ToString() for r in range(5)] == ["mm", "mm", "mm", "mm", "deg"]
    for side, name in (("R", "Right knee"), ("L", "Left knee")):
        expected = list(predicted["prediction"]["knees"][side]["measurements"].values())
        assert np.allclose([table.GetColumnByName(name).GetValue(r) for r in range(5)], expected, atol=1e-3)
    assert table_node.GetName() == "synthetic knee radiograph knee measurements"


def test_apply_again_replaces_the_results_of_the_volume(predicted, results):
    scene = predicted["scene"]
    count = scene.GetNumberOfNodes()
    again = predicted["logic"].add_results(predicted["request"], predicted["prediction"])
    assert scene.GetNumberOfNodes() == count
    assert all(node.GetScene() is None for node in results.nodes)  # the old ones are gone
    assert predicted["logic"].results_for(predicted["volume"]).table is again.table


def test_the_number_of_points_is_fixed_but_points_move(results):
    node = results.knees["R"]
    assert node.AddControlPoint(vtk.vtkVector3d(0, 0, 0), "extra") < 0
    node.RemoveNthControlPoint(0)
    node.RemoveAllControlPoints()
    assert node.GetNumberOfControlPoints() == 16
    node.SetNthControlPointPosition(3, 1.0, 2.0, 3.0)
    p = [0.0, 0.0, 0.0]
    node.GetNthControlPointPosition(3, p)
    assert p == [1.0, 2.0, 3.0]


def test_a_missing_knee_gets_no_node_and_a_reason(predicted):
    scene, logic = predicted["scene"], predicted["logic"]
    prediction = json.loads(json.dumps(predicted["prediction"]))
    prediction["knees"]["L"] = {"side": "L", "present": False, "reason": "no knee found (test)"}
    results = logic.add_results(predicted["request"], prediction)
    assert set(results.knees) == {"R"} and results.table.GetTable().GetColumnByName("Left knee") is None
    assert "Left knee: not found (no knee found (test))" in results.messages[-1]
    prediction["knees"]["R"] = {"side": "R", "present": False, "reason": "no knee found (test)"}
    count = scene.GetNumberOfNodes()
    with pytest.raises(KneelInputError, match="No knee found"):
        logic.add_results(predicted["request"], prediction)
    assert scene.GetNumberOfNodes() == count


# --------------------------------------------------------------------------- edits and measurements
def test_dragging_a_point_updates_the_measurements_table(predicted, results):
    before, after = kt.check_point_drag_updates_table(predicted["logic"], results, side="R", landmark=8)
    assert after > before  # T8 moved 4 mm along +x: the plateau widens


def test_the_table_follows_points_only_through_observers_which_come_back_after_a_reload(predicted, results):
    logic, scene = predicted["logic"], predicted["scene"]
    node, column = results.knees["L"], results.table.GetTable().GetColumnByName("Left knee")
    logic.stop_observing()
    width = column.GetValue(2)
    node.SetNthControlPointPosition(0, *(kt.control_point_positions(node)[0] + [5.0, 0.0, 0.0]))
    assert column.GetValue(2) == width  # nobody observes: the table keeps its value
    other = LandmarksLogic(scene)  # e.g. the module's logic after a scene was loaded
    assert other.observe_results() == 2
    node.SetNthControlPointPosition(0, *(kt.control_point_positions(node)[0] + [5.0, 0.0, 0.0]))
    _, mm = other.knee_geometry(node)
    assert column.GetValue(2) != width
    assert np.isclose(column.GetValue(2), knee_measurements(mm)["tibial_plateau_width_mm"])
    other.stop_observing()
    logic.observe_results()


def test_saved_markups_are_schema_valid_and_reload_identically(predicted, results, tmp_path, markups_schema):
    paths = kt.check_save_and_reload(predicted["logic"], predicted["scene"], predicted["volume"], results, tmp_path)
    assert [p.name for p in paths] == ["synthetic_knee_radiograph_right_knee.mrk.json",
                                       "synthetic_knee_radiograph_left_knee.mrk.json"]
    for side, path in zip(("R", "L"), paths):
        data = json.loads(path.read_text())
        jsonschema.validate(data, markups_schema)
        (markup,) = data["markups"]
        assert markup["type"] == "Fiducial" and markup["fixedNumberOfControlPoints"] is True
        assert markup["display"]["selectedColor"] == [1.0, 0.0, 0.0]  # tibia (selected points)
        assert markup["display"]["color"] == [0.0, 0.8, 0.0]  # femur
        lps = np.array([cp["position"] for cp in markup["controlPoints"]])
        ras = kt.control_point_positions(results.knees[side])
        assert markup["coordinateSystem"] == "LPS" and np.allclose(lps, ras * [-1, -1, 1], atol=1e-3)


def test_the_cohort_csv_row_carries_the_edits(predicted, results, tmp_path):
    logic, volume = predicted["logic"], predicted["volume"]
    node = results.knees["R"]
    index = node.GetNthControlPointIndexByID(json.loads(node.GetAttribute(rn.POINT_IDS))[8])
    moved_to = kt.control_point_positions(node)[index] + 3.0 * ijk_to_ras_matrix(volume)[:3, 0] / np.linalg.norm(
        ijk_to_ras_matrix(volume)[:3, 0])
    node.SetNthControlPointPosition(index, *moved_to)
    path = tmp_path / "cohort.csv"
    logic.export_cohort_csv(volume, path)
    logic.export_cohort_csv(volume, path)  # exporting again replaces the rows of this image
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == COHORT_COLUMNS
        rows = {row["side"]: row for row in reader}
    assert set(rows) == {"R", "L"}
    original = {row["side"]: row for row in cohort_rows(predicted["prediction"])}
    x8 = float(original["R"]["x8_px"]) + 3.0 / volume.GetSpacing()[0]
    assert np.isclose(float(rows["R"]["x8_px"]), x8, atol=1e-3)
    assert "edited in Slicer: T8" in rows["R"]["quality_reasons"]
    assert float(rows["R"]["tibial_plateau_width_mm"]) > float(original["R"]["tibial_plateau_width_mm"]) + 2
    assert rows["R"]["file"] == volume.GetName() and rows["R"]["pixel_spacing_col_mm"] == "0.26"
    for column in [c for c in COHORT_COLUMNS if c.endswith("_px") or c.startswith("confidence")]:
        assert np.isclose(float(rows["L"][column]), float(original["L"][column]), atol=1e-3), column
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(KneelInputError, match="not a kneel cohort CSV"):
        logic.export_cohort_csv(volume, tmp_path / "other.csv")


def test_results_follow_a_transformed_volume(predicted):
    scene, logic, volume = predicted["scene"], predicted["logic"], predicted["volume"]
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    try:
        results = logic.add_results(predicted["request"], predicted["prediction"])
        assert all(node.GetParentTransformNode() is transform for node in results.knees.values())
    finally:
        volume.SetAndObserveTransformNodeID(None)
        scene.RemoveNode(transform)


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_give_a_clear_message_and_leave_the_scene_as_it_was(predicted):
    messages = kt.check_bad_inputs(predicted["logic"], predicted["scene"])
    assert {"no volume", "3-D volume", "RGB", "constant", "model folder"} <= set(messages)
    assert "12 slices" in messages["3-D volume"] and "3 components" in messages["RGB"]
    if not torch.cuda.is_available():
        assert "Choose Auto or CPU" in messages["no GPU"]


def test_a_release_snapshot_folder_is_refused_with_the_conversion_hint(predicted, tmp_path):
    (tmp_path / "session.pkl").write_bytes(b"")
    with pytest.raises(KneelInputError, match="convert it first"):
        predicted["logic"].prepare(predicted["volume"], model_path=str(tmp_path))


def test_a_failure_half_way_removes_what_was_added(predicted):
    message = kt.check_failed_add_rolls_back(predicted["logic"], predicted["scene"], predicted["request"],
                                             predicted["prediction"])
    assert "expected 16" in message


def test_a_volume_removed_while_the_model_ran(predicted):
    scene, logic = predicted["scene"], predicted["logic"]
    volume = kt.make_volume(scene, np.random.default_rng(1).integers(0, 4095, (400, 500)).astype(np.uint16),
                            (0.2, 0.2), name="short-lived")
    request = logic.prepare(volume)
    scene.RemoveNode(volume)
    count = scene.GetNumberOfNodes()
    with pytest.raises(KneelInputError, match="removed from the scene"):
        logic.add_results(request, predicted["prediction"])
    assert scene.GetNumberOfNodes() == count


# --------------------------------------------------------------------------- the spacing trap
def test_spacing_trap_dicom_read_by_slicer_with_1mm_pixels_is_corrected(tmp_path):
    predictor = KneelPredictor(*default_model_dirs(), device="cpu", refine=False)  # one stage-2 pass: quicker
    sample = generate_radiograph(9_100_005, spacing_mm=(0.4, 0.35), size=(800, 900))
    path, _ = write_radiograph(sample, tmp_path, "dx_pixelspacing_only", spacing_tag="PixelSpacing")
    scene = vtkMRMLScene()
    logic = LandmarksLogic(scene)
    volume = kt.read_volume_file(scene, path)
    assert volume.GetSpacing() == (1.0, 1.0, 1.0)  # the trap: Slicer's reader ignored the spacing tag
    request = logic.prepare(volume, device="cpu")
    spacing = request.radiograph.spacing
    assert spacing.corrected and spacing.source == "PixelSpacing" and spacing.spacing_mm == (0.4, 0.35)
    assert "Pixel spacing corrected" in request.radiograph.messages[0] and "0.4 × 0.35 mm" in spacing.message
    assert volume.GetSpacing() == (1.0, 1.0, 1.0)  # preparing changes nothing
    results = logic.add_results(request, logic.predict_in_process(request, predictor))
    assert np.allclose(volume.GetSpacing(), (0.35, 0.4, 1.0))
    kt.check_landmarks_on_truth(results, volume, sample)
    # the model saw what kneel predict sees reading the DICOM itself: the same pixels and spacing
    reference = read_radiograph(path)
    assert np.array_equal(request.radiograph.pixels, reference[0].numpy())
    assert reference.meta["pixel_spacing_mm"] == spacing.spacing_mm
    for side, node in results.knees.items():  # and the table measures in true millimetres
        _, mm = logic.knee_geometry(node)
        column = results.table.GetTable().GetColumnByName(node.GetName())
        assert np.isclose(column.GetValue(2), knee_measurements(mm)["tibial_plateau_width_mm"])
        truth_mm = np.asarray(sample.knees[side]["landmarks_px"]) * [0.35, 0.4]
        assert abs(column.GetValue(2) - knee_measurements(truth_mm)["tibial_plateau_width_mm"]) < 5


def test_a_jpeg_export_loaded_with_1mm_pixels_gets_its_spacing_from_the_field_width(tmp_path):
    """A JPEG/PNG export (no spacing: Slicer loads it with 1 mm pixels and no DICOM file behind it): with the
    field's width the spacing is the width over the columns, set on the volume, and the landmarks land on the knees;
    without it, the 1 mm warning; a DICOM spacing wins over the field width; an impossible width is refused before
    anything changes."""
    predictor = KneelPredictor(*default_model_dirs(), device="cpu", refine=False)
    sample = generate_radiograph(9_100_005, spacing_mm=(0.35, 0.35), size=(800, 900))
    grey = (np.clip(sample.image, 0, 1) * 255).round().astype(np.uint8)  # what an 8-bit export holds
    scene = vtkMRMLScene()
    logic = LandmarksLogic(scene)
    volume = kt.make_volume(scene, grey, spacing_row_col=(1.0, 1.0))  # as Slicer holds a loaded PNG/JPEG
    assert volume.GetSpacing() == (1.0, 1.0, 1.0)
    unknown = logic.prepare(volume, device="cpu")
    assert not unknown.radiograph.spacing.corrected and "1 mm pixels" in unknown.radiograph.messages[0]
    with pytest.raises(KneelInputError, match="Field width"):
        logic.prepare(volume, device="cpu", field_width_mm=0.5)
    request = logic.prepare(volume, device="cpu", field_width_mm=0.35 * 900)
    spacing = request.radiograph.spacing
    assert spacing.corrected and spacing.source == "field_width" and np.allclose(spacing.spacing_mm, (0.35, 0.35))
    assert "315 mm over its 900 columns" in spacing.message and volume.GetSpacing() == (1.0, 1.0, 1.0)
    prediction = logic.predict_in_process(request, predictor)
    assert prediction["spacing_source"] == "field_width"
    results = logic.add_results(request, prediction)
    assert np.allclose(volume.GetSpacing(), (0.35, 0.35, 1.0))
    kt.check_landmarks_on_truth(results, volume, sample)
    # a DICOM's spacing tag wins over a field width
    dicom, _ = write_radiograph(sample, tmp_path, "dx", spacing_tag="PixelSpacing")
    trapped = kt.read_volume_file(scene, dicom)
    checked = logic.prepare(trapped, device="cpu", field_width_mm=500.0).radiograph.spacing
    assert checked.source == "PixelSpacing" and checked.spacing_mm == (0.35, 0.35)


@pytest.mark.parametrize("spacing_tag", ["ImagerPixelSpacing", "PixelSpacing"])
def test_a_kneel_predict_markups_file_on_the_volume_slicer_loaded(tmp_path, spacing_tag):
    """What a user gets dragging `kneel predict`'s .mrk.json onto the radiograph Slicer's reader loaded: the points sit
    on the predicted pixels when the volume has the file's true spacing; in the spacing trap (Slicer's 1 mm pixels)
    they sit at pixel x spacing instead, and setting the volume's spacing to the JSON's pixel_spacing_mm (what the
    Kneel Landmarks module does) puts them back on the image (docs/slicer.md, "The spacing trap")."""
    from kneel_monai.cli import main as kneel

    sample = generate_radiograph(9_100_011, spacing_mm=(0.4, 0.35), size=(800, 900))
    path, _ = write_radiograph(sample, tmp_path, "dx", spacing_tag=spacing_tag)
    assert kneel(["predict", str(path), "--out", str(tmp_path / "out"), "--format", "json,mrk", "--device", "cpu",
                  "--workers", "0", "--no-progress", "--no-refine"]) == 0
    prediction = json.loads((tmp_path / "out" / "dx.json").read_text())
    scene = vtkMRMLScene()
    volume = kt.read_volume_file(scene, path)
    row_mm, col_mm = prediction["pixel_spacing_mm"]

    def pixels_of_the_points() -> dict:
        """Each knee's control points as the volume's (column, row) pixels, through Slicer's own RAS-to-IJK, the
        file read as Slicer's markups reader does (one node per markup in it)."""
        import slicer

        ras_to_ijk = vtk.vtkMatrix4x4()
        volume.GetRASToIJKMatrix(ras_to_ijk)
        storage = slicer.vtkMRMLMarkupsJsonStorageNode()
        scene.AddNode(storage)
        out = {}
        for index in range(2):
            node = storage.AddNewMarkupsNodeFromFile(str(tmp_path / "out" / "dx.mrk.json"), None, index)
            ras = kt.control_point_positions(node)
            out[node.GetName()] = np.array([ras_to_ijk.MultiplyPoint([*p, 1.0])[:3] for p in ras])[:, :2]
        assert sorted(out) == ["Left knee", "Right knee"]
        return out

    spacing = volume.GetSpacing()[:2]
    trapped = not np.allclose(spacing, (col_mm, row_mm))
    assert trapped == (spacing_tag == "PixelSpacing")  # Slicer's reader: ImagerPixelSpacing kept, PixelSpacing not
    if trapped:  # the millimetres land on 1 mm pixels: x 0.35 and x 0.4, off the knee
        for name, ijk in pixels_of_the_points().items():
            side = "R" if name.startswith("Right") else "L"
            px = np.asarray(prediction["knees"][side]["landmarks_px"])
            np.testing.assert_allclose(ijk, px * [col_mm, row_mm], atol=1e-3)
        volume.SetSpacing(col_mm, row_mm, 1.0)  # what the module's correction sets
    for name, ijk in pixels_of_the_points().items():
        side = "R" if name.startswith("Right") else "L"
        np.testing.assert_allclose(ijk, prediction["knees"][side]["landmarks_px"], atol=1e-3)


def test_a_monochrome1_dicom_reaches_the_model_as_kneel_reads_it(tmp_path):
    """Slicer's reader already inverts MONOCHROME1 (bone bright), as kneel_monai's reader does: no second inversion."""
    sample = generate_radiograph(9_100_007, spacing_mm=0.4, size=(700, 800))
    path, _ = write_radiograph(sample, tmp_path, "cr_monochrome1", modality="CR", photometric="MONOCHROME1")
    scene = vtkMRMLScene()
    request = LandmarksLogic(scene).prepare(kt.read_volume_file(scene, path))
    assert np.array_equal(request.radiograph.pixels, read_radiograph(path)[0].numpy())
    assert not request.radiograph.spacing.corrected and request.radiograph.messages == []


def test_the_dicom_laterality_and_view_reach_the_prediction_in_process_and_through_the_nrrd(tmp_path):
    """A DICOM's ImageLaterality and ViewPosition count in Slicer as in `kneel predict`: the in-process prediction
    gets them in the image's metadata, the background one in the NRRD's fields, read back by kneel_monai's reader."""
    from kneel_monai.io import read_image

    predictor = KneelPredictor(*default_model_dirs(), device="cpu", refine=False)
    sample = generate_radiograph(9_100_012, knees=("L",), spacing_mm=0.4, size=(700, 900))
    # the knee lies on the image's right (where a left knee lies), the tag says R: the tag is believed first
    tagged, _ = write_radiograph(sample, tmp_path, "tagged", laterality="R")
    lateral, _ = write_radiograph(sample, tmp_path, "lateral", extra_tags={"ViewPosition": "LL"})
    scene = vtkMRMLScene()
    logic = LandmarksLogic(scene)
    request = logic.prepare(kt.read_volume_file(scene, tagged), device="cpu")
    assert request.radiograph.header_tags == {"ImageLaterality": "R", "ViewPosition": "PA",
                                              "PatientOrientation": "L\\F"}
    result = logic.predict_in_process(request, predictor)
    assert result["knees"]["R"]["present"] and result["knees"]["R"]["side_source"] == "dicom_laterality"
    assert not result["knees"]["L"]["present"] and result["view"]["view_position"] == "PA"
    refused = logic.predict_in_process(logic.prepare(kt.read_volume_file(scene, lateral), device="cpu"), predictor)
    assert not any(k["present"] for k in refused["knees"].values())
    assert "ViewPosition LL" in refused["view"]["reason"]
    # what the background process reads: the NRRD with the two tags as fields
    nrrd = write_nrrd(request.radiograph.pixels, request.radiograph.spacing.spacing_mm, tmp_path / "r.nrrd",
                      {"ImageLaterality": "R", "ViewPosition": "ll"})
    meta = read_image(nrrd).meta
    assert (meta["laterality"], meta["view_position"]) == ("R", "LL")
    plain = read_image(write_nrrd(request.radiograph.pixels, (0.4, 0.4), tmp_path / "plain.nrrd")).meta
    assert (plain["laterality"], plain["view_position"]) == ("", "")  # the reader's "no such tag"
    with pytest.raises(ValueError, match="one-line"):
        write_nrrd(request.radiograph.pixels, (0.4, 0.4), tmp_path / "bad.nrrd", {"ViewPosition": "LL\nsizes: 1"})
    # a source file that is not this volume's image (another size) says nothing
    other, _ = write_radiograph(generate_radiograph(9_100_013, spacing_mm=0.4, size=(600, 800)), tmp_path, "other",
                                extra_tags={"ViewPosition": "LL"})
    volume = kt.read_volume_file(scene, tagged)
    assert dicom_view_tags(volume, str(other)) == {} and dicom_view_tags(volume, None) == {}
    # a source file overwritten since Slicer loaded it: read once, it says nothing of the view and the spacing
    # check says why it was not checked
    gone = tmp_path / "overwritten.dcm"
    gone.write_bytes(b"not a radiograph any more")
    described = describe_source(str(gone))
    assert described[0] is None and described[1].startswith(f"Could not read {gone}")
    assert describe_source(None) == (None, "")
    assert dicom_view_tags(volume, str(gone), described) == {} and dicom_view_tags(volume, str(gone)) == {}
    assert described[1] in check_spacing(volume, str(gone), described=described).message


def test_spacing_trap_found_through_the_dicom_database(tmp_path):
    import pydicom

    sample = generate_radiograph(9_100_006, spacing_mm=0.3, size=(900, 1000))
    path, _ = write_radiograph(sample, tmp_path, "dx_imager_only", spacing_tag="ImagerPixelSpacing")
    uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    scene = vtkMRMLScene()
    pixels = np.rint(sample.image * 4095).astype(np.uint16)
    volume = kt.make_volume(scene, pixels, (1.0, 1.0), np.diag([-1.0, -1.0, 1.0]), name="2: knee DX")
    volume.SetAttribute("DICOM.instanceUIDs", uid)  # as Slicer's DICOM module marks a loaded series
    count = scene.GetNumberOfNodes()
    unchecked = LandmarksLogic(scene).prepare(volume)  # no DICOM database: nothing to check against
    assert not unchecked.radiograph.spacing.corrected and "1 mm pixels" in unchecked.radiograph.messages[0]
    logic = LandmarksLogic(scene, file_for_instance={uid: str(path)}.get)
    request = logic.prepare(volume)
    assert request.radiograph.spacing.corrected and request.radiograph.spacing.source == "ImagerPixelSpacing"
    assert np.allclose(np.linalg.norm(request.radiograph.ijk_to_ras[:3, :2], axis=0), (0.3, 0.3))
    assert scene.GetNumberOfNodes() == count and volume.GetSpacing() == (1.0, 1.0, 1.0)
    # a file whose tags agree with the volume: nothing to say
    volume.SetSpacing(0.3, 0.3, 1.0)
    assert logic.prepare(volume).radiograph.messages == []


# --------------------------------------------------------------------------- the background process
@pytest.fixture(scope="module")
def background_runs(predicted, tmp_path_factory):
    """Two background predictions run side by side: the real one, and one whose weights are truncated."""
    scene = predicted["scene"]
    logic = LandmarksLogic(scene, package_root=REPO_ROOT, warm=False)  # kneel_monai from a source folder
    broken = tmp_path_factory.mktemp("broken") / "models"
    shutil.copytree(Path(default_model_dirs()[0]).parent, broken)
    weights = broken / "landmarks" / "fold_0.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    bad_request = logic.prepare(predicted["volume"], device="cpu", model_path=str(broken))  # looks like a model
    count = scene.GetNumberOfNodes()
    good = logic.start_prediction(predicted["request"])
    bad = logic.start_prediction(bad_request)
    running = good.poll()
    assert running.state == "running" and running.message.startswith("starting")
    return {"logic": logic, "good": good, "good_status": good.wait(timeout=240), "bad": bad,
            "bad_status": bad.wait(timeout=240), "count": count}


def test_the_background_process_gives_the_in_process_result(predicted, background_runs):
    job, status = background_runs["good"], background_runs["good_status"]
    assert status.state == DONE, status.message
    assert "-c" in job.command and str(REPO_ROOT) in job.command  # run from the source folder
    # the panel's progress line reads kneel predict's own output: keep the two in step
    assert _running_message(status.lines) == "running the model on cpu (refinement on)"
    assert predicted["scene"].GetNumberOfNodes() == background_runs["count"]  # the scene untouched meanwhile
    prediction = job.result()
    assert not job.work_dir.exists()  # the temporary folder is gone
    for side in ("R", "L"):  # the radiograph handed over (pixels, spacing) exactly
        assert np.allclose(prediction["knees"][side]["landmarks_px"],
                           predicted["prediction"]["knees"][side]["landmarks_px"], atol=1e-3)
    results = background_runs["logic"].add_results(predicted["request"], prediction)
    kt.check_landmarks_on_truth(results, predicted["volume"], predicted["sample"])


def test_a_crashing_background_process_reports_why(predicted, background_runs):
    status = background_runs["bad_status"]
    assert status.state == FAILED
    assert "SafetensorError" in status.message and "Traceback" not in status.message
    background_runs["bad"].close()
    assert not background_runs["bad"].work_dir.exists()


def test_cancel_stops_the_process_and_cleans_up(predicted):
    scene, logic = predicted["scene"], predicted["logic"]
    count = scene.GetNumberOfNodes()
    job = logic.start_prediction(predicted["request"])
    time.sleep(0.5)
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 10
    status = job.poll()
    assert status.state == CANCELLED and job.process.poll() is not None
    assert not job.work_dir.exists() and scene.GetNumberOfNodes() == count
    with pytest.raises(RuntimeError, match="cancelled"):
        job.result()


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_a_killed_background_process_reports_it(predicted):
    job = predicted["logic"].start_prediction(predicted["request"])
    time.sleep(0.3)
    os.killpg(job.process.pid, signal.SIGKILL)  # e.g. the out-of-memory killer
    status = job.wait(timeout=30)
    job.close()
    assert status.state == FAILED and "killed (SIGKILL)" in status.message
    assert not job.work_dir.exists()


# --------------------------------------------------------------------------- the warm process of a session
@pytest.fixture(scope="module")
def warm(predicted):
    """The module's default: one ``kneel worker`` for the session, run from the source folder as in Slicer."""
    logic = LandmarksLogic(predicted["scene"], package_root=REPO_ROOT)
    yield logic
    logic.stop_worker()


def test_the_warm_process_serves_radiograph_after_radiograph(predicted, warm):
    first = warm.start_prediction(predicted["request"])
    assert first.poll().message.startswith("starting: loading PyTorch")
    assert first.wait(timeout=240).state == DONE
    worker = warm._worker
    pid = worker.process.pid
    second = warm.start_prediction(predicted["request"])
    status = second.wait(timeout=120)
    assert status.state == DONE and "restarted" not in status.message
    assert worker.process.pid == pid and worker.starts == 1  # the same process: models loaded once
    for job in (first, second):
        prediction = job.result()
        assert not job.work_dir.exists()
        for side in ("R", "L"):
            assert np.allclose(prediction["knees"][side]["landmarks_px"],
                               predicted["prediction"]["knees"][side]["landmarks_px"], atol=1e-3)


def test_the_warm_process_is_handed_the_dicom_view(predicted, warm, tmp_path):
    """The background process reads the NRRD the module writes: the DICOM's ViewPosition goes with it."""
    sample = generate_radiograph(9_100_014, spacing_mm=0.4, size=(700, 900))
    lateral, _ = write_radiograph(sample, tmp_path, "lateral", extra_tags={"ViewPosition": "LL"})
    scene = vtkMRMLScene()
    request = warm.prepare(kt.read_volume_file(scene, lateral), device="cpu")
    job = warm.start_prediction(request)
    status = job.wait(timeout=240)
    assert status.state == DONE, status.message
    prediction = job.result()
    assert not any(k["present"] for k in prediction["knees"].values())
    assert prediction["view"]["view_position"] == "LL" and "ViewPosition LL" in prediction["view"]["reason"]


def test_a_failing_radiograph_leaves_the_warm_process_usable(predicted, warm, tmp_path):
    worker = warm._worker_for(predicted["request"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "radiograph.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 2\n")  # a header, cut short
    status = worker.submit(bad / "radiograph.nrrd", bad / "out", bad).wait(timeout=240)
    assert status.state == FAILED and "radiograph.nrrd" in status.message
    pid = worker.process.pid
    good = warm.start_prediction(predicted["request"])
    assert good.wait(timeout=120).state == DONE and worker.process.pid == pid
    good.close()


def test_a_cancelled_or_killed_warm_process_is_started_again_and_says_so(predicted, warm):
    job = warm.start_prediction(predicted["request"])
    worker = warm._worker
    starts = worker.starts
    job.cancel()
    assert job.poll().state == CANCELLED and not worker.alive and not job.work_dir.exists()
    again = warm.start_prediction(predicted["request"])
    assert "restarted the prediction process (the previous one ended: cancelled)" in again.poll().message
    assert again.wait(timeout=240).state == DONE and worker.starts == starts + 1
    again.close()
    if os.name == "nt":
        return
    job = warm.start_prediction(predicted["request"])
    os.killpg(worker.process.pid, signal.SIGKILL)  # e.g. the out-of-memory killer
    status = job.wait(timeout=30)
    job.close()
    assert status.state == FAILED and "killed (SIGKILL)" in status.message and "starts the prediction process" \
        in status.message
    last = warm.start_prediction(predicted["request"])
    assert "restarted the prediction process (the previous one ended: the prediction process was killed" \
        in last.wait(timeout=240).message
    last.close()


def test_the_library_imports_without_kneel_monai_or_torch():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import KneelLandmarksLib; "
            "print(sorted(m for m in ('kneel_monai', 'torch', 'monai', 'qt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(MODULE_DIR)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_module_names_the_sides_as_the_library_does():
    from KneelLandmarksLib import logic

    from kneel_monai.landmarks import SIDES

    assert logic._SIDES == SIDES  # a copy only because Slicer loads the module before kneel_monai is installed


# --- the sample radiograph in Slicer's Sample Data module ------------------------------------------------------

class SampleDataLogicStandIn:
    """Records what the module registers. Slicer's SampleData module needs Slicer's application and Qt, so its
    ``SampleDataLogic.registerCustomSampleDataSource`` is stood in for, with its signature (Slicer 5.10–5.13)."""

    def __init__(self):
        self.sources = []

    def registerCustomSampleDataSource(self, category="Custom", sampleName=None, uris=None, fileNames=None,
                                       nodeNames=None, customDownloader=None, thumbnailFileName=None,
                                       loadFileTypes=None, loadFiles=None, loadFileProperties={}, checksums=None,
                                       loadFileType=None):  # Slicer's own signature, mutable default included
        self.sources.append({"category": category, "sampleName": sampleName, "uris": uris, "fileNames": fileNames,
                             "nodeNames": nodeNames, "thumbnailFileName": thumbnailFileName,
                             "loadFileTypes": loadFileTypes, "loadFileProperties": loadFileProperties,
                             "checksums": checksums})


def test_the_sample_radiograph_is_registered_and_loads_as_sample_data_loads_it(tmp_path):
    """Registered from the module's own files; fetched as Sample Data fetches a URI (urlretrieve into its cache,
    then the checksum); read by Slicer's volume reader; the module prepares it with the DICOM's true spacing."""
    import hashlib
    import urllib.request

    from KneelLandmarksLib import sampledata
    from PIL import Image

    logic = SampleDataLogicStandIn()
    assert sampledata.register_sample_data(logic, MODULE_DIR)
    (source,) = logic.sources
    assert source["category"] == "Kneel Landmarks" and source["sampleName"] == "KneelSyntheticBilateralKnee"
    thumbnail = Image.open(source["thumbnailFileName"])
    assert thumbnail.format == "PNG" and 200 <= thumbnail.width <= 300 and 200 <= thumbnail.height <= 300
    assert source["uris"].startswith("file:"), "the sample must come with the module, not be downloaded"
    cached = tmp_path / source["fileNames"]
    urllib.request.urlretrieve(source["uris"], cached)  # SampleDataLogic.downloadFile
    algo, digest = source["checksums"].split(":")
    assert hashlib.new(algo, cached.read_bytes()).hexdigest() == digest
    assert cached.read_bytes() == (REPO_ROOT / "samples" / "synthetic_bilateral_knee.dcm").read_bytes()

    scene = vtkMRMLScene()
    assert source["loadFileTypes"] == "VolumeFile" and source["loadFileProperties"] == {"singleFile": True}
    volume = kt.read_volume_file(scene, cached)  # Slicer's volume reader, one file (singleFile)
    assert volume.GetImageData().GetDimensions() == (1900, 1600, 1)
    request = LandmarksLogic(scene).prepare(volume, device="cpu")
    assert request.radiograph.spacing.spacing_mm == (0.2, 0.2)  # ImagerPixelSpacing, read from the cached file


def test_the_installed_extension_registers_its_own_copy_of_the_sample(tmp_path):
    from KneelLandmarksLib import sampledata

    module_dir = tmp_path / "KneelLandmarks"  # the build's layout: KneelLandmarksPackage/ beside the module
    package = module_dir / "KneelLandmarksPackage"
    (package / "kneel_monai").mkdir(parents=True)
    (package / "kneel_monai" / "__init__.py").write_text("")
    logic = SampleDataLogicStandIn()
    assert not sampledata.register_sample_data(logic, module_dir) and logic.sources == []  # no sample: nothing
    (package / "samples").mkdir()
    shutil.copy(REPO_ROOT / "samples" / "synthetic_bilateral_knee.dcm", package / "samples")
    assert sampledata.register_sample_data(logic, module_dir)
    assert logic.sources[0]["uris"] == (package / "samples" / "synthetic_bilateral_knee.dcm").as_uri()
