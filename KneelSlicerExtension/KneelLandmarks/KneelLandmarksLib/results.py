"""The result nodes: one markups fiducial node per knee and a measurements table, and back.

* **Landmarks**: a ``vtkMRMLMarkupsFiducialNode`` per present knee, named as in ``kneel predict``'s
  ``.mrk.json`` (:data:`kneel_monai.io.markups.KNEE_NAMES`: "Right knee", "Left knee"), holding the
  16 landmarks in id order, labelled ``"T4 tibial centre"`` … ``"F15 femur medial margin"``. The
  number of points is fixed (a click cannot add or delete one) and the node is unlocked (points
  can be dragged). Tibia and femur: markups have one colour per node for selected and one for
  unselected points, so — as in ``kneel predict``'s files — tibial points are *selected* and
  drawn in ``selectedColor`` (red), femoral points unselected in ``color`` (green).
* **Measurements**: a ``vtkMRMLTableNode`` with a row per knee measurement
  (:data:`kneel_monai.measurements.MEASUREMENTS`) and a column per present knee.

Every node carries ``KneelLandmarks.*`` attributes (its role, side, the knee's prediction) and a
``kneelVolume`` reference to the radiograph, so results are found again after a scene is saved
and reloaded; nothing is kept only in Python objects.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import vtk

from .geometry import pixels_to_ras, ras_to_pixels

__all__ = [
    "KNEE", "MEASUREMENT_LABELS", "POINT_IDS", "PREDICTION", "ROLE", "SIDE", "TABLE_REFERENCE", "VOLUME_REFERENCE",
    "create_knee_node", "create_measurements_table", "knee_nodes_of", "knee_points_px", "measurements_table_of",
    "new_storage_node", "remove_nodes", "set_table_column",
]

ROLE = "KneelLandmarks.role"  # "landmarks" | "measurements"
SIDE = "KneelLandmarks.side"  # "R" | "L"
KNEE = "KneelLandmarks.knee"  # the knee's prediction (KneeResult.to_dict()) as JSON
POINT_IDS = "KneelLandmarks.pointIDs"  # control-point IDs in landmark-id order, JSON
PREDICTION = "KneelLandmarks.prediction"  # the whole prediction JSON (on the table node)
VOLUME_REFERENCE = "kneelVolume"
TABLE_REFERENCE = "kneelMeasurements"

#: table row labels of the measurements
MEASUREMENT_LABELS = {
    "lateral_jsw_mm": "lateral joint space width",
    "medial_jsw_mm": "medial joint space width",
    "tibial_plateau_width_mm": "tibial plateau width",
    "femoral_condyle_width_mm": "femoral condyle width",
    "joint_line_angle_deg": "joint-line angle",
}
_ACTIVE_COLOUR = (1.0, 1.0, 0.0)


def new_storage_node(scene, class_name: str):
    """A storage node not added to the scene (Slicer registers markups storage classes; slicer-core may not)."""
    node = scene.CreateNodeByClass(class_name) if scene is not None else None
    if node is not None:
        node.UnRegister(None)  # CreateNodeByClass hands over a reference; Python keeps its own
        return node
    import slicer

    return getattr(slicer, class_name)()


def create_knee_node(scene, side: str, knee: dict[str, Any], ijk_to_ras: np.ndarray, volume_node):
    """Add the fiducial node of one present knee (``knee`` is a ``KneeResult.to_dict()``)."""
    from kneel_monai.io.markups import KNEE_NAMES
    from kneel_monai.landmarks import BONE_COLOURS, LANDMARKS, NUM_LANDMARKS

    points = np.asarray(knee["landmarks_px"], dtype=np.float64)
    if points.shape != (NUM_LANDMARKS, 2) or not np.isfinite(points).all():
        raise ValueError(f"{KNEE_NAMES[side]}: expected {NUM_LANDMARKS} finite (x, y) points, got {points.shape}")
    confidence = knee.get("confidence") or [None] * NUM_LANDMARKS
    ras = pixels_to_ras(points, ijk_to_ras)
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", KNEE_NAMES[side])
    node.CreateDefaultDisplayNodes()
    wasModifying = node.StartModify()
    try:
        ids = []
        for lm, pos, conf in zip(LANDMARKS, ras, confidence):
            index = node.AddControlPoint(vtk.vtkVector3d(*(float(v) for v in pos)), lm.label)
            description = lm.bone if conf is None else f"{lm.bone}; predicted, confidence {float(conf):.3f}"
            node.SetNthControlPointDescription(index, description)
            node.SetNthControlPointSelected(index, lm.bone == "tibia")
            node.SetNthControlPointLocked(index, False)
            ids.append(node.GetNthControlPointID(index))
        node.SetLocked(False)
        node.SetFixedNumberOfControlPoints(True)
        node.SetAttribute(ROLE, "landmarks")
        node.SetAttribute(SIDE, side)
        node.SetAttribute(KNEE, json.dumps(knee))
        node.SetAttribute(POINT_IDS, json.dumps(ids))
        node.SetNodeReferenceID(VOLUME_REFERENCE, volume_node.GetID())
        if volume_node.GetParentTransformNode() is not None:  # stay on the image if it is transformed
            node.SetAndObserveTransformNodeID(volume_node.GetParentTransformNode().GetID())
    finally:
        node.EndModify(wasModifying)
    display = node.GetDisplayNode()
    display.SetSelectedColor(*BONE_COLOURS["tibia"])
    display.SetColor(*BONE_COLOURS["femur"])
    display.SetActiveColor(*_ACTIVE_COLOUR)
    display.SetPointLabelsVisibility(True)
    display.SetPropertiesLabelVisibility(False)
    display.SetTextScale(2.0)
    display.SetGlyphScale(1.5)
    return node


def knee_points_px(node, ijk_to_ras: np.ndarray) -> np.ndarray:
    """The ``(16, 2)`` ``(x, y)`` pixels of a knee node's points, in landmark-id order."""
    ids = json.loads(node.GetAttribute(POINT_IDS) or "[]")
    indices = [node.GetNthControlPointIndexByID(i) for i in ids]
    if len(indices) != node.GetNumberOfControlPoints() or min(indices, default=-1) < 0:
        indices = list(range(node.GetNumberOfControlPoints()))
    ras = np.zeros((len(indices), 3))
    for row, index in enumerate(indices):
        position = [0.0, 0.0, 0.0]
        node.GetNthControlPointPosition(index, position)
        ras[row] = position
    px, _ = ras_to_pixels(ras, ijk_to_ras)
    return px


def create_measurements_table(scene, volume_node, prediction: dict[str, Any], name: str):
    """Add the measurements table (rows: measurements; a column per present knee) and return it."""
    from kneel_monai.io.markups import KNEE_NAMES
    from kneel_monai.measurements import MEASUREMENTS

    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = table_node.GetTable()
    for column_name in ("Measurement", "Unit"):
        column = vtk.vtkStringArray()
        column.SetName(column_name)
        table.AddColumn(column)
    for side, knee in prediction["knees"].items():
        if knee["present"]:
            column = vtk.vtkDoubleArray()
            column.SetName(KNEE_NAMES[side])
            table.AddColumn(column)
    table.SetNumberOfRows(len(MEASUREMENTS))
    for row, (key, unit) in enumerate(MEASUREMENTS.items()):
        table.SetValue(row, 0, vtk.vtkVariant(MEASUREMENT_LABELS.get(key, key)))
        table.SetValue(row, 1, vtk.vtkVariant(unit))
    for side, knee in prediction["knees"].items():
        if knee["present"]:
            set_table_column(table_node, side, knee["measurements"])
    table_node.SetAttribute(ROLE, "measurements")
    table_node.SetAttribute(PREDICTION, json.dumps(prediction))
    table_node.SetNodeReferenceID(VOLUME_REFERENCE, volume_node.GetID())
    return table_node


def set_table_column(table_node, side: str, measurements: dict[str, float]) -> None:
    """Write one knee's measurements into its column of the table."""
    from kneel_monai.io.markups import KNEE_NAMES
    from kneel_monai.measurements import MEASUREMENTS

    column = table_node.GetTable().GetColumnByName(KNEE_NAMES[side])
    if column is None:
        raise ValueError(f"the measurements table has no column '{KNEE_NAMES[side]}'")
    for row, key in enumerate(MEASUREMENTS):
        column.SetValue(row, float(measurements[key]))
    column.Modified()
    table_node.GetTable().Modified()
    table_node.Modified()


def _referencing(scene, volume_id: str, role: str) -> list:
    nodes = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        if node.GetAttribute(ROLE) == role and node.GetNodeReferenceID(VOLUME_REFERENCE) == volume_id:
            nodes.append(node)
    return nodes


def knee_nodes_of(scene, volume_id: str) -> dict[str, Any]:
    """``{side: fiducial node}`` of the results on a volume."""
    return {node.GetAttribute(SIDE): node for node in _referencing(scene, volume_id, "landmarks")}


def measurements_table_of(scene, volume_id: str):
    nodes = _referencing(scene, volume_id, "measurements")
    return nodes[-1] if nodes else None


def remove_nodes(scene, nodes) -> None:
    """Remove nodes with their display and storage nodes (MRML does not remove those by itself)."""
    for node in nodes:
        if node is None or node.GetScene() is None:
            continue
        dependents = []
        for getter, count in (("GetNthDisplayNode", "GetNumberOfDisplayNodes"),
                              ("GetNthStorageNode", "GetNumberOfStorageNodes")):
            if hasattr(node, count):
                dependents += [getattr(node, getter)(i) for i in range(getattr(node, count)())]
        scene.RemoveNode(node)
        for dependent in dependents:
            if dependent is not None and dependent.GetScene() is not None:
                scene.RemoveNode(dependent)
