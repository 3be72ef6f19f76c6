"""Scenes and checks shared by the pytest suite (headless, slicer-core) and the module's self-test in Slicer.

Each ``check_*`` function asserts on real MRML nodes and returns what it measured, so that both
test runners run exactly the same checks.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import vtk

from . import results as rn
from .geometry import ijk_to_ras_matrix, numpy_matrix, pixels_to_ras, vtk_matrix
from .volume import KneelInputError

__all__ = [
    "check_bad_inputs", "check_failed_add_rolls_back", "check_landmarks_on_truth", "control_point_positions",
    "read_volume_file",
    "check_point_drag_updates_table", "check_save_and_reload", "make_volume", "node_count", "rotation",
    "synthetic_knee_volume", "truth_ras",
]


def rotation(degrees: float, axis=(1.0, 2.0, 3.0)) -> np.ndarray:
    """A ``(3, 3)`` rotation about ``axis`` (Rodrigues)."""
    k = np.asarray(axis, dtype=np.float64)
    k /= np.linalg.norm(k)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * kx + (1 - np.cos(t)) * kx @ kx


def make_volume(scene, pixels: np.ndarray, spacing_row_col=(1.0, 1.0), direction=None, origin=(0.0, 0.0, 0.0),
                name: str = "radiograph", node_class: str = "vtkMRMLScalarVolumeNode", slice_spacing: float = 1.0):
    """A volume node holding ``pixels`` — ``(H, W)``, ``(K, H, W)`` or ``(H, W, C)`` for a vector volume."""
    from vtk.util.numpy_support import numpy_to_vtk

    arr = np.asarray(pixels)
    vector = node_class == "vtkMRMLVectorVolumeNode"
    components = arr.shape[-1] if vector else 1
    grid = arr.shape[:-1] if vector else arr.shape
    k, h, w = (1, *grid) if len(grid) == 2 else grid
    image = vtk.vtkImageData()
    image.SetDimensions(w, h, k)
    scalars = numpy_to_vtk(np.ascontiguousarray(arr).reshape(-1, components) if vector
                           else np.ascontiguousarray(arr).ravel(), deep=True)
    scalars.SetNumberOfComponents(components)
    image.GetPointData().SetScalars(scalars)
    volume = scene.AddNewNodeByClass(node_class, name)
    volume.SetAndObserveImageData(image)
    volume.SetSpacing(float(spacing_row_col[1]), float(spacing_row_col[0]), float(slice_spacing))
    volume.SetOrigin(*(float(v) for v in origin))
    if direction is not None:
        m = np.eye(4)
        m[:3, :3] = direction
        volume.SetIJKToRASDirectionMatrix(vtk_matrix(m))
    return volume


def synthetic_knee_volume(scene, seed: int, spacing_row_col=(0.30, 0.26), size=(1100, 1300), knees=("R", "L"),
                          oblique: bool = True, name: str = "synthetic knee radiograph"):
    """A synthetic bilateral radiograph (:mod:`kneel_monai.synthetic`) as a 12-bit volume node with a
    non-trivial geometry: anisotropic spacing, an oblique direction matrix and an origin away from 0."""
    from kneel_monai.synthetic.generate import generate_radiograph

    sample = generate_radiograph(seed, spacing_mm=spacing_row_col, size=size, knees=knees)
    pixels = np.rint(np.clip(sample.image, 0, 1) * 4095).astype(np.uint16)
    direction = rotation(35.0) @ np.diag([-1.0, -1.0, 1.0]) if oblique else np.diag([-1.0, -1.0, 1.0])
    origin = (41.5, -87.25, 12.0) if oblique else (0.0, 0.0, 0.0)
    volume = make_volume(scene, pixels, sample.pixel_spacing_mm, direction, origin, name)
    return volume, sample


def truth_ras(volume, sample) -> dict[str, np.ndarray | None]:
    """The ground-truth landmarks of a synthetic sample in RAS through the volume's IJK→RAS."""
    matrix = ijk_to_ras_matrix(volume)
    return {side: None if knee is None else pixels_to_ras(knee["landmarks_px"], matrix)
            for side, knee in sample.knees.items()}


def node_count(scene) -> int:
    return scene.GetNumberOfNodes()


def read_volume_file(scene, path):
    """Load a file as Slicer's Add Data does (the volume archetype storage node, ITK/GDCM underneath)."""
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", Path(path).stem)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    if not storage.ReadData(volume):
        raise OSError(f"{path}: Slicer's volume reader could not read it")
    volume.SetAndObserveStorageNodeID(storage.GetID())
    return volume


def control_point_positions(node) -> np.ndarray:
    """``(N, 3)`` RAS positions of a markups node's control points."""
    out = np.zeros((node.GetNumberOfControlPoints(), 3))
    for i in range(len(out)):
        p = [0.0, 0.0, 0.0]
        node.GetNthControlPointPosition(i, p)
        out[i] = p
    return out


def check_landmarks_on_truth(results, volume, sample, max_mm: float = 10.0, mean_mm: float = 2.5
                             ) -> dict[str, np.ndarray]:
    """Each present knee: one node of 16 fixed, unlocked, labelled points on the ground truth (RAS mm).

    The tolerances are the shipped model's error on synthetic radiographs (max over all landmarks
    of both knees, and their mean); the geometry itself is exact (see the pytest suite).
    """
    from kneel_monai.io.markups import KNEE_NAMES
    from kneel_monai.landmarks import BONE_COLOURS, LANDMARKS

    truth = truth_ras(volume, sample)
    errors = {}
    for side, expected in truth.items():
        node = results.knees.get(side)
        if expected is None:
            assert node is None, f"{side}: a node for an absent knee"
            continue
        assert node is not None, f"{side}: no node for a present knee"
        assert node.GetName() == KNEE_NAMES[side]
        assert node.GetNumberOfControlPoints() == 16
        assert node.GetFixedNumberOfControlPoints() and not node.GetLocked()
        assert [node.GetNthControlPointLabel(i) for i in range(16)] == [lm.label for lm in LANDMARKS]
        assert [bool(node.GetNthControlPointSelected(i)) for i in range(16)] == [lm.bone == "tibia" for lm in LANDMARKS]
        display = node.GetDisplayNode()
        assert np.allclose(display.GetSelectedColor(), BONE_COLOURS["tibia"])
        assert np.allclose(display.GetColor(), BONE_COLOURS["femur"])
        errors[side] = np.linalg.norm(control_point_positions(node) - expected, axis=1)
    pooled = np.concatenate(list(errors.values()))
    assert pooled.max() < max_mm and pooled.mean() < mean_mm, \
        f"RAS errors: max {pooled.max():.2f} mm, mean {pooled.mean():.2f} mm"
    return errors


def _table_value(table, side: str, key: str) -> float:
    from kneel_monai.io.markups import KNEE_NAMES
    from kneel_monai.measurements import MEASUREMENTS

    return float(table.GetTable().GetColumnByName(KNEE_NAMES[side]).GetValue(list(MEASUREMENTS).index(key)))


def check_point_drag_updates_table(logic, results, side: str = "R", landmark: int = 8, shift_mm: float = 4.0
                                   ) -> tuple[float, float]:
    """Move a landmark along the image's row direction: the table's measurements follow at once.

    Returns the tibial plateau width before and after.
    """
    from kneel_monai.measurements import MEASUREMENTS, knee_measurements

    node, table, volume = results.knees[side], results.table, results.volume
    _, before_mm = logic.knee_geometry(node)
    width_before = _table_value(table, side, "tibial_plateau_width_mm")
    assert np.isclose(width_before, knee_measurements(before_mm)["tibial_plateau_width_mm"])
    row_direction = numpy_matrix(_direction(volume))[:3, 0]  # RAS direction of +x (columns)
    index = node.GetNthControlPointIndexByID(json.loads(node.GetAttribute(rn.POINT_IDS))[landmark])
    p = [0.0, 0.0, 0.0]
    node.GetNthControlPointPosition(index, p)
    node.SetNthControlPointPosition(index, *(np.asarray(p) + shift_mm * row_direction))  # fires PointModifiedEvent
    expected_mm = before_mm.copy()
    expected_mm[landmark, 0] += shift_mm
    expected = knee_measurements(expected_mm)
    for key in MEASUREMENTS:
        assert np.isclose(_table_value(table, side, key), expected[key], atol=1e-6), key
    width_after = _table_value(table, side, "tibial_plateau_width_mm")
    assert abs(width_after - width_before) > 0.5 * shift_mm
    return width_before, width_after


def _direction(volume) -> vtk.vtkMatrix4x4:
    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASDirectionMatrix(m)
    return m


def check_save_and_reload(logic, scene, volume, results, folder) -> list[Path]:
    """Save with Slicer's JSON storage node and read back into new nodes: same labels, positions, flags."""
    paths = logic.save_markups(volume, folder)
    assert len(paths) == len(results.knees)
    for side, path in zip([s for s in ("R", "L") if s in results.knees], paths):
        original = results.knees[side]
        count = node_count(scene)
        reloaded = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "reloaded")
        storage = rn.new_storage_node(scene, "vtkMRMLMarkupsJsonStorageNode")
        storage.SetFileName(str(path))
        try:
            assert storage.ReadData(reloaded), f"could not read {path}"
            assert reloaded.GetNumberOfControlPoints() == 16
            assert reloaded.GetFixedNumberOfControlPoints()
            for i in range(16):
                assert reloaded.GetNthControlPointLabel(i) == original.GetNthControlPointLabel(i)
                assert reloaded.GetNthControlPointSelected(i) == original.GetNthControlPointSelected(i)
            assert np.allclose(control_point_positions(reloaded), control_point_positions(original), atol=1e-3)
        finally:
            rn.remove_nodes(scene, [reloaded])
        assert node_count(scene) == count
    return paths


def check_bad_inputs(logic, scene) -> dict[str, str]:
    """Bad inputs give a :class:`KneelInputError` with a clear message and leave the scene as it was."""
    messages = {}

    def expect(key: str, words: str, call) -> None:
        before = node_count(scene)
        try:
            call()
        except KneelInputError as err:
            messages[key] = str(err)
        else:
            raise AssertionError(f"{key}: no error")
        assert words.lower() in messages[key].lower(), messages[key]
        assert node_count(scene) == before, f"{key}: the scene changed"

    rng = np.random.default_rng(0)
    expect("no volume", "no input volume", lambda: logic.prepare(None))
    ct = make_volume(scene, rng.integers(0, 1000, (12, 64, 64)).astype(np.int16), (0.7, 0.7), name="a CT")
    rgb = make_volume(scene, rng.integers(0, 255, (300, 400, 3)).astype(np.uint8), name="a screenshot",
                      node_class="vtkMRMLVectorVolumeNode")
    flat = make_volume(scene, np.zeros((300, 400), np.uint16), name="a blank image")
    good = make_volume(scene, rng.integers(0, 4095, (300, 400)).astype(np.uint16), (0.2, 0.2), name="noise")
    try:
        expect("3-D volume", "3-D volume", lambda: logic.prepare(ct))
        expect("RGB", "colour image", lambda: logic.prepare(rgb))
        expect("constant", "constant image", lambda: logic.prepare(flat))
        with tempfile.TemporaryDirectory() as empty:
            expect("model folder", "not a kneel-monai model", lambda: logic.prepare(good, model_path=empty))
        import torch

        if not torch.cuda.is_available():
            expect("no GPU", "GPU asked for", lambda: logic.prepare(good, device="cuda"))
    finally:
        rn.remove_nodes(scene, [ct, rgb, flat, good])
    return messages


def check_failed_add_rolls_back(logic, scene, request, prediction: dict[str, Any]) -> str:
    """A prediction that breaks half-way through adding nodes leaves the scene (and the volume) as it was."""
    broken = json.loads(json.dumps(prediction))
    present = [s for s in ("R", "L") if broken["knees"][s]["present"]]
    broken["knees"][present[-1]]["landmarks_px"] = broken["knees"][present[-1]]["landmarks_px"][:15]
    volume = scene.GetNodeByID(request.radiograph.volume_id)
    count, spacing = node_count(scene), volume.GetSpacing()
    try:
        logic.add_results(request, broken)
    except ValueError as err:
        message = str(err)
    else:
        raise AssertionError("a broken prediction was accepted")
    assert node_count(scene) == count, "half-made nodes left in the scene"
    assert volume.GetSpacing() == spacing
    return message
