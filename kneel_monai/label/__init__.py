"""MONAI Label support, independent of MONAI Label itself: label validation and conversion.

* :func:`check_id` — datastore ids are plain names (no ``..``, no path separators).
* :func:`parse_label` — a corrected Slicer ``.mrk.json`` (as written by
  :func:`kneel_monai.io.markups.write_markups` and edited in Slicer) → checked LPS points per knee.
* :func:`label_to_pixels` / :func:`label_to_ground_truth` — those points → training targets in
  the radiograph's pixels through the image's own geometry (its pixel spacing, origin 0,
  identity direction: the convention of :mod:`kneel_monai.io.markups`).
* :func:`epistemic_score` — one number per radiograph from the MC-dropout spread in mm.

Every rejection is a :class:`LabelError` carrying an HTTP status (400 malformed, 404 unknown,
422 well-formed but wrong) and a message that names the problem.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..io.markups import KNEE_NAMES, lps_to_pixels
from ..landmarks import LANDMARKS, NUM_LANDMARKS, SIDES

__all__ = ["LabelError", "ParsedLabel", "STOCK_CLIENT_HINT", "check_id", "parse_label", "label_to_pixels",
           "label_to_ground_truth", "epistemic_score", "LABEL_EXT"]

LABEL_EXT = ".mrk.json"
_SIDE_OF_NAME = {v: k for k, v in KNEE_NAMES.items()}
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: landmark label prefix ("T4", "F12") → id
_LABEL_ID = {lm.label.split(" ", 1)[0]: lm.id for lm in LANDMARKS}
#: how far outside the image a corrected point may sit (fraction of the image size)
OUTSIDE_TOLERANCE = 0.05


class LabelError(ValueError):
    """A rejected label or image; ``status`` is the HTTP status the server answers with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def check_id(image_id: Any, what: str = "image id") -> str:
    """A datastore id (or label tag: ``what``) must be a plain name: letters, digits, ``._-``, no ``..``, no ``/``."""
    if not isinstance(image_id, str) or not image_id:
        raise LabelError(f"{what} missing", 400)
    if ".." in image_id or "/" in image_id or "\\" in image_id or not _ID_RE.match(image_id):
        raise LabelError(f"invalid {what} {image_id[:80]!r}: use letters, digits, '.', '_' and '-' only "
                         "(no '..', no path separators)", 400)
    return image_id


class ParsedLabel(dict):
    """``{"R": (16, 3) LPS mm or None, "L": …}`` plus ``absent`` (side → reason) and ``spacing``."""

    absent: dict[str, str]
    spacing: tuple[float, float] | None


def _points(markup: dict[str, Any], where: str) -> np.ndarray:
    points = markup.get("controlPoints")
    if not isinstance(points, list):
        raise LabelError(f"{where}: 'controlPoints' must be a list", 422)
    if len(points) != NUM_LANDMARKS:
        raise LabelError(f"{where}: {len(points)} control points, expected {NUM_LANDMARKS}", 422)
    lps = np.full((NUM_LANDMARKS, 3), np.nan)
    seen: set[int] = set()
    for order, cp in enumerate(points):
        if not isinstance(cp, dict):
            raise LabelError(f"{where}: control point {order} is not an object", 422)
        head = str(cp.get("label", "")).split(" ", 1)[0]
        index = _LABEL_ID.get(head, order)
        if index in seen:
            raise LabelError(f"{where}: landmark {head or order} given twice", 422)
        seen.add(index)
        pos = cp.get("position")
        if (not isinstance(pos, list) or len(pos) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pos)):
            raise LabelError(f"{where}: control point {cp.get('label', order)!r} needs a 'position' of 3 numbers", 422)
        if cp.get("positionStatus", "defined") != "defined":
            raise LabelError(f"{where}: control point {cp.get('label', order)!r} is not placed "
                             f"(positionStatus {cp.get('positionStatus')!r})", 422)
        try:
            lps[index] = pos
        except (OverflowError, ValueError):  # an integer of hundreds of digits is no coordinate
            raise LabelError(f"{where}: control point {cp.get('label', order)!r}: coordinates out of range",
                             422) from None
    if not np.isfinite(lps).all():
        raise LabelError(f"{where}: non-finite coordinates", 422)
    system = markup.get("coordinateSystem", "LPS")
    if system not in ("LPS", "RAS"):
        raise LabelError(f"{where}: coordinateSystem {system!r} (expected 'LPS' or 'RAS')", 422)
    if system == "RAS":
        lps[:, :2] *= -1
    if markup.get("coordinateUnits", "mm") != "mm":
        raise LabelError(f"{where}: coordinateUnits must be 'mm'", 422)
    return lps


#: what to do when MONAI Label's own Slicer client submits: for a detection-type model it sends the scene's ROI
#: boxes (every vtkMRMLMarkupsROINode), never point lists, so it cannot carry landmark corrections
STOCK_CLIENT_HINT = ("MONAI Label's own Slicer client sends the scene's boxes (ROI markups) for a detection model; "
                     "this app's labels are the 16 landmarks of each knee as fiducial markups: correct the "
                     "proposed points and submit them with the Kneel Landmarks module ('Submit label'), or PUT "
                     "the .mrk.json the server proposed, corrected (see the project's docs/label.md)")


def parse_label(content: bytes | str | dict[str, Any]) -> ParsedLabel:
    """Check a knee ``.mrk.json`` and return its points (LPS mm) per knee.

    Requirements beyond the Slicer markups schema: one ``Fiducial`` markup per knee named
    ``"Right knee"``/``"Left knee"`` with exactly 16 defined points; a knee without a markup must be
    listed in ``kneel.absent_knees`` (what the infer task writes for a radiograph with one knee), so
    that a knee lost by mistake is an error rather than an unlabelled knee.
    """
    if isinstance(content, dict):
        data = content
    else:
        try:
            data = json.loads(content)
        except (UnicodeDecodeError, ValueError) as err:
            raise LabelError(f"label is not JSON: {err}", 400) from None
        except RecursionError:
            raise LabelError("label is not a markups file: its JSON is nested far too deep", 400) from None
    if not isinstance(data, dict):
        raise LabelError("label must be a JSON object (a Slicer .mrk.json)", 400)
    schema = data.get("@schema")
    if not isinstance(schema, str) or "markups-" not in schema:
        raise LabelError("not a Slicer markups file: '@schema' must name the markups schema "
                         "(…/markups-v1.0.3-schema.json#)", 422)
    markups = data.get("markups")
    if not isinstance(markups, list):
        raise LabelError("'markups' must be a list", 422)
    kneel = data.get("kneel") if isinstance(data.get("kneel"), dict) else {}
    absent = kneel.get("absent_knees") or {}
    if not isinstance(absent, dict):
        raise LabelError("kneel.absent_knees must be an object (side → reason)", 422)
    if not markups and not absent:
        raise LabelError(f"label holds no markup. {STOCK_CLIENT_HINT}", 422)
    out = ParsedLabel(R=None, L=None)
    for i, markup in enumerate(markups):
        if not isinstance(markup, dict):
            raise LabelError(f"markup {i} is not an object", 422)
        if markup.get("type") == "ROI":
            raise LabelError(f"markup {i} is a box (ROI), not knee landmarks. {STOCK_CLIENT_HINT}", 422)
        name = markup.get("name")
        side = _SIDE_OF_NAME.get(name)
        if markup.get("type") != "Fiducial" or side is None:
            raise LabelError(f"markup {i} ({markup.get('type')!r} {name!r}): expected a Fiducial markup named "
                             f"{' or '.join(repr(n) for n in KNEE_NAMES.values())}", 422)
        if out[side] is not None:
            raise LabelError(f"{name} appears twice", 422)
        out[side] = _points(markup, str(name))
    missing = [s for s in SIDES if out[s] is None and s not in absent]
    if len(missing) == 2:
        raise LabelError("label holds no knee: give 16 points for each knee, or list an absent knee in "
                         "kneel.absent_knees", 422)
    if missing:
        raise LabelError(f"label has only one knee: the {KNEE_NAMES[missing[0]]} has no markup and is not marked "
                         f"absent (add its {NUM_LANDMARKS} points, or list it in kneel.absent_knees)", 422)
    out.absent = {s: str(absent[s]) for s in SIDES if out[s] is None}
    stored = kneel.get("pixel_spacing_mm")
    out.spacing = None
    if stored is not None:
        try:
            out.spacing = (float(stored[0]), float(stored[1]))
        except (TypeError, ValueError, IndexError):
            raise LabelError("kneel.pixel_spacing_mm must be [row, col] millimetres", 422) from None
    return out


def label_to_pixels(label: ParsedLabel, spacing_mm: tuple[float, float], image_size: tuple[int, int] | None = None
                    ) -> dict[str, np.ndarray | None]:
    """LPS mm → ``(16, 2)`` ``(x, y)`` pixels through the image's geometry (spacing ``(row, col)``).

    ``image_size`` ``(H, W)``: points more than :data:`OUTSIDE_TOLERANCE` outside the image are an
    error (a label for another image); a stored spacing that disagrees with the image's as well.
    """
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]))
    if label.spacing is not None and not np.allclose(label.spacing, spacing, rtol=1e-4):
        raise LabelError(f"label was made on a {label.spacing} mm grid but the image's pixel spacing is "
                         f"{spacing} mm (a label for another image?)", 422)
    out: dict[str, np.ndarray | None] = {}
    for side in SIDES:
        lps = label.get(side)
        if lps is None:
            out[side] = None
            continue
        if np.abs(lps[:, 2]).max() > max(spacing):
            raise LabelError(f"{KNEE_NAMES[side]}: points off the image plane (S = {lps[:, 2].max():.2f} mm)", 422)
        px = lps_to_pixels(lps, spacing)
        if image_size is not None:
            h, w = image_size
            mx, my = OUTSIDE_TOLERANCE * w, OUTSIDE_TOLERANCE * h
            if (px[:, 0] < -mx).any() or (px[:, 0] > w - 1 + mx).any() or (px[:, 1] < -my).any() \
                    or (px[:, 1] > h - 1 + my).any():
                raise LabelError(f"{KNEE_NAMES[side]}: points outside the {w}×{h} image (a label for another "
                                 "image?)", 422)
        out[side] = px
    return out


def label_to_ground_truth(label_path: str | Path, image_path: str | Path, subject_id: str, out_path: str | Path):
    """Write the ``kneel-monai/ground-truth`` JSON for a stored label (the training target)."""
    from ..data.ground_truth import GroundTruth, KneeTruth, write_ground_truth
    from ..io import read_radiograph

    image = read_radiograph(image_path)
    spacing = tuple(float(v) for v in image.meta["pixel_spacing_mm"])
    size = tuple(int(v) for v in image.shape[-2:])
    label = parse_label(Path(label_path).read_bytes())
    px = label_to_pixels(label, spacing, size)
    gt = GroundTruth(path=Path(out_path), image=Path(image_path).resolve(), subject_id=subject_id,
                     knees={s: None if px[s] is None else KneeTruth(px[s]) for s in SIDES},
                     pixel_spacing_mm=spacing, image_size=size, extra={"source": "monai-label final label"})
    return write_ground_truth(gt, out_path)


def epistemic_score(result: dict[str, Any]) -> float:
    """Uncertainty of one prediction (``RadiographResult.to_dict()`` with MC dropout): mean spread in mm.

    The mean over present knees' landmarks of the MC-dropout spread (RMS distance to the mean
    prediction); a radiograph with no knee found scores ``inf`` (it needs a human first).
    """
    spreads = [np.asarray(k["spread_mm"], float) for k in result["knees"].values()
               if k.get("present") and k.get("spread_mm") is not None]
    if not spreads:
        return float("inf")
    return float(np.mean(np.concatenate(spreads)))
