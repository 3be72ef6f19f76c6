"""3D Slicer markups files (``.mrk.json``, schema v1.0.3) for predicted knee landmarks.

One ``Fiducial`` markup per present knee (``"Right knee"`` / ``"Left knee"``) holding the 16
landmarks in id order, labelled with :attr:`kneel_monai.landmarks.Landmark.label`
(``"T4 tibial centre"``, ``"F12 femoral notch centre"``); ``fixedNumberOfControlPoints`` and
``locked`` keep the point count and positions as predicted until the user unlocks them. An
absent knee has no markup.

Coordinates: Slicer reads a 2-D radiograph (PNG, DX/CR DICOM without an image position) as a
one-slice volume with origin 0 and identity direction in **LPS**, so pixel column ``c`` and
row ``r`` (pixel centres at integers) sit at::

    L = c · s_col,   P = r · s_row,   S = 0        (millimetres; RAS shown by Slicer = (−L, −P, S))

with ``(s_row, s_col)`` the radiograph's pixel spacing. The file stores these LPS positions
(``"coordinateSystem": "LPS"``) so the points land on the image as Slicer displays it.

Tibia and femur: the schema has no per-point colour, only a markup's ``color`` (points not
selected) and ``selectedColor`` (points selected). Tibial points are written selected and
femoral points unselected, with ``selectedColor`` red and ``color`` green — the paper's tibia
red / femur green — and each point's ``description`` names its bone (and its confidence).
Re-selecting points in Slicer changes their colour, not their labels.

A top-level ``"kneel"`` object (ignored by Slicer; the schema allows extra properties) keeps
the image and its spacing so that :func:`read_markups` maps positions back to pixels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..landmarks import BONE_COLOURS, LANDMARKS, NUM_LANDMARKS

__all__ = ["MARKUPS_SCHEMA_URL", "KNEE_NAMES", "markups_dict", "write_markups", "read_markups",
           "pixels_to_lps", "lps_to_pixels"]

#: the ``@schema`` a Slicer 5 markups file names (the schema's own ``$id``).
MARKUPS_SCHEMA_URL = (
    "https://raw.githubusercontent.com/Slicer/Slicer/main/Modules/Loadable/Markups/Resources/Schema/"
    "markups-v1.0.3-schema.json#"
)
KNEE_NAMES = {"R": "Right knee", "L": "Left knee"}
#: control-point orientation Slicer writes for an LPS file (identity in RAS)
_LPS_ORIENTATION = [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0]


def pixels_to_lps(points_px: Any, spacing_mm: tuple[float, float]) -> np.ndarray:
    """``(N, 2)`` ``(x, y)`` pixels → ``(N, 3)`` LPS millimetres; ``spacing_mm`` is ``(row, col)``."""
    p = np.asarray(points_px, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must be (N, 2) (x, y) pixels, got shape {p.shape}")
    s_row, s_col = (float(v) for v in spacing_mm)
    return np.stack([p[:, 0] * s_col, p[:, 1] * s_row, np.zeros(len(p))], axis=1)


def lps_to_pixels(points_lps: Any, spacing_mm: tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`pixels_to_lps`: ``(N, 3)`` LPS mm → ``(N, 2)`` ``(x, y)`` pixels."""
    p = np.asarray(points_lps, dtype=np.float64)
    s_row, s_col = (float(v) for v in spacing_mm)
    return np.stack([p[:, 0] / s_col, p[:, 1] / s_row], axis=1)


def _spacing_of(result: Any) -> tuple[float, float]:
    spacing = tuple(float(v) for v in result.pixel_spacing_mm)
    if len(spacing) != 2 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise ValueError(f"{result.path}: pixel spacing {spacing} cannot place points in millimetres")
    return spacing  # type: ignore[return-value]


def _markup(side: str, points_px: np.ndarray, confidence: np.ndarray | None, spacing: tuple[float, float]
            ) -> dict[str, Any]:
    pts = np.asarray(points_px, dtype=np.float64)
    if pts.shape != (NUM_LANDMARKS, 2) or not np.isfinite(pts).all():
        raise ValueError(f"knee {side}: expected {NUM_LANDMARKS} finite (x, y) points, got shape {pts.shape}")
    lps = pixels_to_lps(pts, spacing)
    control_points = []
    for lm, pos in zip(LANDMARKS, lps):
        description = lm.bone if confidence is None else f"{lm.bone}; confidence {float(confidence[lm.id]):.3f}"
        control_points.append({
            "id": str(lm.id + 1), "label": lm.label, "description": description, "associatedNodeID": "",
            "position": [float(v) for v in pos], "orientation": list(_LPS_ORIENTATION),
            "selected": lm.bone == "tibia", "locked": True, "visibility": True, "positionStatus": "defined",
        })
    return {
        "type": "Fiducial", "name": KNEE_NAMES[side], "coordinateSystem": "LPS", "coordinateUnits": "mm",
        "locked": True, "fixedNumberOfControlPoints": True, "labelFormat": "%N-%d",
        "lastUsedControlPointNumber": NUM_LANDMARKS, "controlPoints": control_points, "measurements": [],
        "display": {
            "visibility": True, "opacity": 1.0,
            "color": list(BONE_COLOURS["femur"]), "selectedColor": list(BONE_COLOURS["tibia"]),
            "activeColor": [1.0, 1.0, 0.0], "propertiesLabelVisibility": False, "pointLabelsVisibility": True,
            "textScale": 2.0, "glyphType": "Sphere3D", "glyphScale": 1.5, "glyphSize": 3.0, "useGlyphScale": True,
            "sliceProjection": False, "snapMode": "toVisibleSurface",
        },
    }


def markups_dict(result: Any) -> dict[str, Any]:
    """The ``.mrk.json`` content for a :class:`~kneel_monai.inference.RadiographResult`.

    Uses each present knee's ``landmarks_px`` and ``confidence`` and the result's
    ``pixel_spacing_mm`` ``(row, col)``.
    """
    spacing = _spacing_of(result)
    markups = [_markup(side, knee.landmarks_px, knee.confidence, spacing)
               for side, knee in result.knees.items() if knee.present and knee.landmarks_px is not None]
    return {
        "@schema": MARKUPS_SCHEMA_URL,
        "markups": markups,
        "kneel": {
            "format": "kneel-monai/markups", "format_version": 1, "image": str(result.path),
            "pixel_spacing_mm": list(spacing),
            "coordinates": "LPS mm = (col * spacing_col, row * spacing_row, 0); image origin 0, identity direction",
            "absent_knees": {side: knee.reason for side, knee in result.knees.items() if not knee.present},
        },
    }


def write_markups(result: Any, path: str | os.PathLike) -> Path:
    """Write the predicted landmarks of one radiograph as a Slicer ``.mrk.json`` (atomically)."""
    return atomic_write_text(path, json.dumps(markups_dict(result), indent=2) + "\n")


def read_markups(path: str | os.PathLike, spacing_mm: tuple[float, float] | None = None
                 ) -> dict[str, np.ndarray | None]:
    """Read a knee markups file back: ``{"R": (16, 2) px or None, "L": …}``.

    The one reader of knee markups: the label server's checks (:func:`kneel_monai.label.parse_label`,
    strict: 16 defined points per knee, an absent knee listed as such, LPS or RAS) and the mapping to
    pixels (:func:`kneel_monai.label.label_to_pixels`). ``spacing_mm`` ``(row, col)`` defaults to the
    spacing stored by :func:`write_markups`. A file that fails the checks raises a ``ValueError``
    naming it.
    """
    from ..label import LabelError, label_to_pixels, parse_label  # the checks live with the label server

    try:
        label = parse_label(Path(path).read_bytes())
        spacing = spacing_mm if spacing_mm is not None else label.spacing
        if spacing is None:
            raise LabelError("no pixel spacing stored in the file; pass spacing_mm=(row, col)")
        return label_to_pixels(label, (float(spacing[0]), float(spacing[1])))
    except LabelError as err:
        raise ValueError(f"{path}: {err}") from None
