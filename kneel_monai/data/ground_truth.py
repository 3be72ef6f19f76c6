"""Ground-truth files: one JSON per radiograph with the landmarks of each knee in its pixels.

Format (written by ``kneel synth``, the OAI builder and annotation tools)::

    {"format": "kneel-monai/ground-truth", "format_version": 1,
     "image": "knee_0001.dcm",                 # relative to the JSON's folder, or absolute
     "subject_id": "9000798",                  # optional; patient-wise folds group by it
     "pixel_spacing_mm": [0.15, 0.15],         # (row, col), optional when the image has it
     "image_size": [2500, 2000],               # (H, W), optional, checked when given
     "synthetic": true,                        # optional provenance
     "knees": {"R": {"landmarks_px": [[x, y] × 16], "kl": 2},
               "L": null}}                     # null: that knee is absent

Landmarks are ``(x, y)`` = ``(col, row)`` pixels of the original image with anatomical ids
(0 = lateral tibial margin on either knee); ``R`` is the patient's right knee (image left half).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..landmarks import NUM_LANDMARKS, SIDES

__all__ = ["GT_FORMAT", "GroundTruthError", "KneeTruth", "GroundTruth", "read_ground_truth", "write_ground_truth",
           "is_ground_truth_file"]

GT_FORMAT = "kneel-monai/ground-truth"


class GroundTruthError(ValueError):
    """A ground-truth file that cannot be used; the message starts with the file's path."""


@dataclass
class KneeTruth:
    landmarks_px: np.ndarray  # (16, 2) float64, (x, y)
    kl: int | None = None


@dataclass
class GroundTruth:
    path: Path | None
    image: Path
    knees: dict[str, KneeTruth | None]
    subject_id: str
    pixel_spacing_mm: tuple[float, float] | None = None
    image_size: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        image = self.image
        if relative_to is not None:
            try:
                image = Path(os.path.relpath(self.image, relative_to))
            except ValueError:  # another drive
                pass
        out: dict[str, Any] = {"format": GT_FORMAT, "format_version": 1, "image": str(image),
                               "subject_id": self.subject_id}
        if self.pixel_spacing_mm is not None:
            out["pixel_spacing_mm"] = [float(v) for v in self.pixel_spacing_mm]
        if self.image_size is not None:
            out["image_size"] = [int(v) for v in self.image_size]
        out.update(self.extra)
        out["knees"] = {
            side: None if knee is None else {"landmarks_px": np.asarray(knee.landmarks_px, float).tolist(),
                                             "kl": knee.kl}
            for side, knee in self.knees.items()
        }
        return out


def is_ground_truth_file(path: Path) -> bool:
    """Cheap check: a ``.json`` whose text names the ground-truth format."""
    if path.suffix.lower() != ".json":
        return False
    try:
        with open(path, encoding="utf-8") as fh:
            return GT_FORMAT in fh.read(4096)
    except (OSError, UnicodeDecodeError):
        return False


def _fail(path: Path, problem: str) -> GroundTruthError:
    return GroundTruthError(f"{path}: {problem}")


def read_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """Read and validate a ground-truth JSON (shapes, finite points inside the image when its size is given)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise _fail(path, f"cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise _fail(path, f"invalid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != GT_FORMAT:
        raise _fail(path, f"not a ground-truth file ('format' is not {GT_FORMAT!r})")
    if not isinstance(data.get("image"), str) or not data["image"]:
        raise _fail(path, "'image' must name the radiograph file")
    image = Path(data["image"])
    image = image if image.is_absolute() else path.parent / image
    size = data.get("image_size")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise _fail(path, f"'image_size' must be [H, W], got {size}")
    spacing = data.get("pixel_spacing_mm")
    if spacing is not None and (len(spacing) != 2 or not all(float(s) > 0 for s in spacing)):
        raise _fail(path, f"'pixel_spacing_mm' must be two positive numbers, got {spacing}")
    knees_in = data.get("knees")
    if not isinstance(knees_in, dict) or not set(knees_in) <= set(SIDES):
        raise _fail(path, f"'knees' must be an object with keys among {SIDES}")
    knees: dict[str, KneeTruth | None] = {}
    for side in SIDES:
        knee = knees_in.get(side)
        if knee is None:
            knees[side] = None
            continue
        pts = np.asarray(knee.get("landmarks_px"), dtype=np.float64) if isinstance(knee, dict) else None
        if pts is None or pts.shape != (NUM_LANDMARKS, 2) or not np.isfinite(pts).all():
            raise _fail(path, f"knee {side}: 'landmarks_px' must be {NUM_LANDMARKS} finite [x, y] pairs")
        if size is not None:
            h, w = size
            outside = np.flatnonzero((pts[:, 0] < -0.5) | (pts[:, 0] > w - 0.5) | (pts[:, 1] < -0.5)
                                     | (pts[:, 1] > h - 0.5))
            if outside.size:
                raise _fail(path, f"knee {side}: landmarks {outside.tolist()} lie outside the {h}×{w} image")
        kl = knee.get("kl")
        if kl is not None and (not isinstance(kl, int) or not 0 <= kl <= 4):
            raise _fail(path, f"knee {side}: 'kl' must be an integer 0-4 or null, got {kl!r}")
        knees[side] = KneeTruth(pts, kl)
    if all(k is None for k in knees.values()):
        raise _fail(path, "no knee has landmarks")
    known = {"format", "format_version", "image", "subject_id", "pixel_spacing_mm", "image_size", "knees"}
    return GroundTruth(
        path=path, image=image, knees=knees,
        subject_id=str(data.get("subject_id") or image.stem),
        pixel_spacing_mm=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        image_size=None if size is None else (int(size[0]), int(size[1])),
        extra={k: v for k, v in data.items() if k not in known},
    )


def write_ground_truth(gt: GroundTruth, path: str | os.PathLike) -> Path:
    """Write atomically (temp file + rename); the image path is stored relative to the JSON's folder."""
    path = Path(path)
    text = json.dumps(gt.to_dict(relative_to=path.parent), indent=1, allow_nan=False) + "\n"
    return atomic_write_text(path, text)

