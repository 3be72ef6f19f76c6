"""Knee measurements from the 16 landmarks, in millimetres and degrees.

The definitions (``docs/predict.md``, "Knee measurements", has a picture) use only the landmark ids, so they hold
for right and left knees alike and for any image orientation:

* **tibial plateau width** ``|T8 − T0|``: lateral to medial tibial margin;
* **femoral condyle width** ``|F15 − F9|``: lateral to medial femoral margin;
* **lateral / medial joint space width** (minimum JSW of each compartment): the shortest distance
  from a femoral condyle landmark of the compartment (lateral F9, F10; medial F14, F15) to the
  tibial plateau polyline of the same compartment (lateral T0–T1–T2, medial T6–T7–T8). The
  landmarks next to the centre — T3, T4, T5 on the tibial spines and F11, F12, F13 at the
  intercondylar notch — are left out: in the 748 annotated OAI knees T3 and T5 sit 11–12 mm above
  the plateau (on the spines), so distances to them are not joint space;
* **joint-line angle** (joint-line convergence angle): the angle between the femoral condyle line
  F9→F15 and the tibial plateau line T0→T8, in degrees; positive when the two lines converge
  medially (the femoral line is closer to the tibial line at its medial end, as in medial
  narrowing / varus), negative when they converge laterally, 0 when parallel.

Distances are Euclidean in the image plane of the radiograph, from landmarks in millimetres
(``KneeResult.landmarks_mm``, or pixels times the pixel spacing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MEASUREMENTS", "LATERAL_TIBIA", "MEDIAL_TIBIA", "LATERAL_FEMUR", "MEDIAL_FEMUR", "knee_measurements",
           "point_to_polyline", "nearest_on_polyline", "jsw_segments"]

#: compartments by landmark id (a right knee's image order runs lateral → medial)
LATERAL_TIBIA: tuple[int, ...] = (0, 1, 2)
MEDIAL_TIBIA: tuple[int, ...] = (6, 7, 8)
LATERAL_FEMUR: tuple[int, ...] = (9, 10)
MEDIAL_FEMUR: tuple[int, ...] = (14, 15)

#: name → unit, in the order of tables and CSV columns
MEASUREMENTS: dict[str, str] = {
    "lateral_jsw_mm": "mm",
    "medial_jsw_mm": "mm",
    "tibial_plateau_width_mm": "mm",
    "femoral_condyle_width_mm": "mm",
    "joint_line_angle_deg": "deg",
}


def nearest_on_polyline(point: np.ndarray, polyline: np.ndarray) -> np.ndarray:
    """The point of the polyline through ``polyline`` (K, 2) nearest to ``point`` (2,)."""
    a, b = polyline[:-1], polyline[1:]
    ab = b - a
    length2 = np.einsum("ij,ij->i", ab, ab)
    t = np.clip(np.einsum("ij,ij->i", point - a, ab) / np.where(length2 > 0, length2, 1.0), 0.0, 1.0)
    nearest = a + t[:, None] * ab
    return nearest[int(np.argmin(np.linalg.norm(point - nearest, axis=1)))]


def point_to_polyline(point: np.ndarray, polyline: np.ndarray) -> float:
    """Shortest distance from ``point`` (2,) to the polyline through ``polyline`` (K, 2)."""
    return float(np.linalg.norm(point - nearest_on_polyline(point, polyline)))


def jsw_segments(landmarks: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Where each compartment's joint space width is measured: ``{"lateral"|"medial": (femoral point, tibial point)}``.

    Works in any units (pixels for drawing, mm for measuring); the segment's length is the JSW.
    """
    p = np.asarray(landmarks, dtype=np.float64)
    out = {}
    for name, femur, tibia in (("lateral", LATERAL_FEMUR, LATERAL_TIBIA), ("medial", MEDIAL_FEMUR, MEDIAL_TIBIA)):
        pairs = [(p[i], nearest_on_polyline(p[i], p[list(tibia)])) for i in femur]
        out[name] = min(pairs, key=lambda fp: float(np.linalg.norm(fp[0] - fp[1])))
    return out


def _signed_distance_to_line(points: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    normal = np.array([-direction[1], direction[0]])
    return (points - origin) @ normal


def knee_measurements(landmarks_mm: Sequence[Sequence[float]] | np.ndarray) -> dict[str, float]:
    """The measurements of one knee from its ``(16, 2)`` landmarks in mm (see the module docstring).

    Raises ``ValueError`` for a wrong shape or non-finite landmarks.
    """
    p = np.asarray(landmarks_mm, dtype=np.float64)
    if p.shape != (16, 2):
        raise ValueError(f"knee_measurements needs (16, 2) landmarks, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("knee_measurements: landmarks contain NaN or infinite values")
    tibia_line = p[8] - p[0]
    femur_line = p[15] - p[9]
    plateau = float(np.linalg.norm(tibia_line))
    condyles = float(np.linalg.norm(femur_line))
    segments = jsw_segments(p)
    lateral, medial = (float(np.linalg.norm(f - t)) for f, t in (segments["lateral"], segments["medial"]))

    # unsigned angle between the two lines; its sign from where the femoral line is nearer the tibial line
    cos = float(np.dot(tibia_line, femur_line) / max(plateau * condyles, 1e-12))
    angle = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    unit = tibia_line / max(plateau, 1e-12)
    lateral_end, medial_end = np.abs(_signed_distance_to_line(p[[9, 15]], p[0], unit))
    sign = 1.0 if medial_end < lateral_end else -1.0 if medial_end > lateral_end else 0.0
    return {
        "lateral_jsw_mm": lateral,
        "medial_jsw_mm": medial,
        "tibial_plateau_width_mm": plateau,
        "femoral_condyle_width_mm": condyles,
        "joint_line_angle_deg": sign * angle,
    }
