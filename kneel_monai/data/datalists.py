"""A folder of radiographs + ground-truth JSONs → MONAI datalists for both stages, with folds.

* ROI stage (one item per radiograph): ``{"image", "spacing_mm", "knee_centres_px": {"R": [x, y] | None,
  "L": …}, "subject_id", "kl": {"R": …, "L": …}, "fold"}`` — the centre is landmark 4.
* Landmark stage (one item per knee): ``{"image", "spacing_mm", "side", "landmarks_px": [[x, y] × 16],
  "subject_id", "kl", "fold"}``.

Points are in the original radiograph's pixels; the stage transforms
(:mod:`kneel_monai.data.pipelines`) resample, crop and mirror on the fly.
``spacing_mm`` is set only when the image file carries none (then it comes from the ground truth).
A build goes on past bad files and reports them in ``bad_files``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..atomic import atomic_write_text
from ..io import RadiographReadError, read_radiograph
from ..landmarks import KNEE_CENTRE_ID, SIDES
from .folds import patient_folds
from .ground_truth import GroundTruthError, is_ground_truth_file, read_ground_truth

__all__ = ["DATALIST_FORMAT", "Datalists", "build_datalists", "write_datalist", "read_datalist", "split_folds"]

DATALIST_FORMAT = "kneel-monai/datalist"


@dataclass
class Datalists:
    roi: list[dict[str, Any]]
    landmarks: list[dict[str, Any]]
    bad_files: list[dict[str, str]] = field(default_factory=list)
    n_folds: int = 5
    seed: int = 42

    def write(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        out = Path(out_dir)
        return (write_datalist(out / "roi_datalist.json", "roi", self.roi, self),
                write_datalist(out / "landmark_datalist.json", "landmarks", self.landmarks, self))


def _check_image(gt) -> tuple[tuple[int, int], list[float] | None]:
    """Read the radiograph once (catches truncated/corrupt files); its size, and a spacing to store."""
    try:
        img = read_radiograph(gt.image)
        spacing = None
    except RadiographReadError as err:
        if gt.pixel_spacing_mm is None or "spacing" not in err.problem:
            raise
        img, spacing = read_radiograph(gt.image, gt.pixel_spacing_mm), list(gt.pixel_spacing_mm)
    return tuple(img.shape[-2:]), spacing


def build_datalists(root: str | os.PathLike, n_folds: int = 5, seed: int = 42, progress: bool = True) -> Datalists:
    """Scan ``root`` recursively for ground-truth JSONs and build both stages' items with folds."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    files = sorted(p for p in root.rglob("*.json") if is_ground_truth_file(p))
    records, bad = [], []
    for path in tqdm(files, desc="checking radiographs", unit="image", disable=not progress):
        try:
            gt = read_ground_truth(path)
            size, spacing = _check_image(gt)
            if gt.image_size is not None and tuple(gt.image_size) != size:
                raise GroundTruthError(f"{path}: image_size {gt.image_size} but {gt.image} is {size}")
            h, w = size
            for side, knee in gt.knees.items():
                if knee is None:
                    continue
                p = knee.landmarks_px
                if ((p[:, 0] < -0.5) | (p[:, 0] > w - 0.5) | (p[:, 1] < -0.5) | (p[:, 1] > h - 0.5)).any():
                    raise GroundTruthError(f"{path}: knee {side} has landmarks outside the {h}×{w} image {gt.image}")
            records.append((gt, spacing))
        except (GroundTruthError, RadiographReadError) as err:
            bad.append({"file": str(path), "reason": str(err)})
    subjects, grades = [], []
    for gt, _ in records:
        for knee in gt.knees.values():
            if knee is not None:
                subjects.append(gt.subject_id)
                grades.append(knee.kl)
    folds = patient_folds(subjects, grades, n_folds, seed) if subjects else {}
    roi, landmarks = [], []
    for gt, spacing in records:
        fold = folds[gt.subject_id]
        roi.append({
            "image": str(gt.image), "spacing_mm": spacing, "subject_id": gt.subject_id, "fold": fold,
            "knee_centres_px": {s: None if gt.knees[s] is None else gt.knees[s].landmarks_px[KNEE_CENTRE_ID].tolist()
                                for s in SIDES},
            "kl": {s: None if gt.knees[s] is None else gt.knees[s].kl for s in SIDES},
        })
        for side in SIDES:
            knee = gt.knees[side]
            if knee is not None:
                landmarks.append({"image": str(gt.image), "spacing_mm": spacing, "side": side,
                                  "landmarks_px": knee.landmarks_px.tolist(), "subject_id": gt.subject_id,
                                  "kl": knee.kl, "fold": fold})
    return Datalists(roi, landmarks, bad, n_folds, seed)


def write_datalist(path: str | os.PathLike, stage: str, items: list[dict], meta: Datalists | None = None) -> Path:
    """Write one stage's datalist atomically."""
    payload = {"format": DATALIST_FORMAT, "stage": stage, "items": items}
    if meta is not None:
        payload.update({"n_folds": meta.n_folds, "seed": meta.seed, "bad_files": meta.bad_files})
    return atomic_write_text(path, json.dumps(payload, indent=1, allow_nan=False))


def read_datalist(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read datalist ({err})") from None
    if data.get("format") != DATALIST_FORMAT:
        raise ValueError(f"{path}: not a kneel-monai datalist")
    return data


def split_folds(items: list[dict], fold: int) -> tuple[list[dict], list[dict]]:
    """``(training items, validation items)`` for cross-validation fold ``fold``."""
    return [i for i in items if i["fold"] != fold], [i for i in items if i["fold"] == fold]
