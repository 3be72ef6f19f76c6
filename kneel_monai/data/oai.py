"""OAI builder: a folder of OAI knee DICOMs + the KNEEL annotation CSV → ground truth and datalists.

The CSV (748 knees, public with the KNEEL paper) gives per knee ``subject_id, side, kl,
tibia, femur, bbox, center``: ``tibia``/``femur`` are 9/7 ``x,y`` pairs in a 140 mm ROI at 0.3 mm
(466 px) centred on landmark 4, left knees already mirrored; ``bbox`` is ``x0,y0,x1,y1`` in the
whole image resampled to 0.3 mm and zero-padded by 100 px. So (method.md §6)::

    x_0.3 = (466 − x if side == "L" else x) + x0 − 100,    y_0.3 = y + y0 − 100
    x_px  = x_0.3 · 0.3 / col_spacing,                      y_px  = y_0.3 · 0.3 / row_spacing

with the DICOM's spacing (ImagerPixelSpacing, else PixelSpacing). DICOMs are found by content
(any folder layout, any file names) and matched by PatientID; a DICOM whose laterality is the
other side is not used for a knee. When a subject has several candidate radiographs, the one
whose SeriesDescription names the bilateral PA fixed-flexion series is preferred; remaining
ties are reported as ambiguous (the first by path is used).
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..io import RadiographReadError, describe_radiograph
from ..landmarks import SIDES
from .datalists import Datalists, build_datalists
from .ground_truth import GroundTruth, KneeTruth, write_ground_truth

__all__ = ["default_annotation_csv", "KneelCsvRow", "read_kneel_csv", "roi_to_original_px", "original_px_to_roi",
           "find_dicoms",
           "OaiBuildReport", "build_oai_dataset", "ROI_SIZE_PX", "IMAGE_PAD_PX", "ANNOTATION_SPACING_MM"]

ROI_SIZE_PX = 466  # 140 mm at 0.3 mm, as the annotation files store it
IMAGE_PAD_PX = 100
ANNOTATION_SPACING_MM = 0.3
SERIES_HINT = "bilateral pa fixed flexion"


@dataclass
class KneelCsvRow:
    line: int
    subject_id: str
    side: str
    kl: int | None
    roi_points: np.ndarray  # (16, 2) in the 0.3 mm ROI, mirrored for L
    bbox: tuple[int, int, int, int]


def default_annotation_csv() -> Path:
    """The KNEEL authors' annotation file of 748 OAI knees, shipped with the package
    (``kneel_monai/data/kneel_oai_landmarks_0.3mm.csv``; cite Tiulpin et al. 2019, see KNEEL_ANNOTATIONS.md)."""
    return Path(__file__).with_name("kneel_oai_landmarks_0.3mm.csv")


def _pairs(text: str, count: int, what: str) -> np.ndarray:
    values = [float(v) for v in text.split(",")]
    if len(values) != 2 * count:
        raise ValueError(f"{what} needs {count} x,y pairs, got {len(values)} numbers")
    return np.asarray(values, dtype=np.float64).reshape(count, 2)


def read_kneel_csv(path: str | os.PathLike) -> tuple[list[KneelCsvRow], list[dict[str, str]]]:
    """Rows of the KNEEL annotation CSV, and the malformed ones (``{"file", "reason"}`` naming the line)."""
    path = Path(path)
    rows, bad = [], []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"subject_id", "side", "kl", "tibia", "femur", "bbox"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: not a KNEEL annotation CSV (missing columns {sorted(missing)})")
        for line, rec in enumerate(reader, start=2):
            try:
                side = rec["side"].strip().upper()
                if side not in ("L", "R"):
                    raise ValueError(f"side must be L or R, got {rec['side']!r}")
                kl_text = (rec["kl"] or "").strip()
                kl = int(float(kl_text)) if kl_text not in ("", "nan", "NA") else None
                points = np.concatenate([_pairs(rec["tibia"], 9, "tibia"), _pairs(rec["femur"], 7, "femur")])
                bbox = tuple(int(round(float(v))) for v in rec["bbox"].split(","))
                if len(bbox) != 4:
                    raise ValueError(f"bbox needs 4 numbers, got {len(bbox)}")
                rows.append(KneelCsvRow(line, rec["subject_id"].strip(), side, kl, points, bbox))
            except (ValueError, KeyError, AttributeError) as err:
                bad.append({"file": f"{path}:{line}", "reason": f"{path}:{line}: {err}"})
    return rows, bad


def roi_to_original_px(row: KneelCsvRow, spacing_mm: tuple[float, float]) -> np.ndarray:
    """The row's 16 landmarks in the original radiograph's pixels ``(x, y)`` (method.md §6)."""
    x, y = row.roi_points[:, 0].copy(), row.roi_points[:, 1]
    if row.side == "L":
        x = ROI_SIZE_PX - x
    x03 = x + row.bbox[0] - IMAGE_PAD_PX
    y03 = y + row.bbox[1] - IMAGE_PAD_PX
    return np.stack([x03 * ANNOTATION_SPACING_MM / spacing_mm[1], y03 * ANNOTATION_SPACING_MM / spacing_mm[0]], 1)


def original_px_to_roi(points_px: np.ndarray, side: str, bbox: tuple[int, int, int, int],
                       spacing_mm: tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`roi_to_original_px` (used to write annotation rows for given landmarks)."""
    x03 = points_px[:, 0] * spacing_mm[1] / ANNOTATION_SPACING_MM
    y03 = points_px[:, 1] * spacing_mm[0] / ANNOTATION_SPACING_MM
    x = x03 - bbox[0] + IMAGE_PAD_PX
    if side == "L":
        x = ROI_SIZE_PX - x
    return np.stack([x, y03 - bbox[1] + IMAGE_PAD_PX], 1)


def find_dicoms(folder: str | os.PathLike, progress: bool = True) -> tuple[dict[str, list[dict]], list[dict]]:
    """All readable DICOM headers under ``folder`` grouped by PatientID, and the unusable files."""
    by_patient: dict[str, list[dict]] = defaultdict(list)
    bad = []
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    for path in tqdm(files, desc="scanning DICOMs", unit="file", disable=not progress):
        try:
            info = describe_radiograph(path)
        except RadiographReadError as err:
            if path.suffix.lower() in (".dcm", ".dicom", "") and path.stat().st_size > 0:
                bad.append({"file": str(path), "reason": str(err)})
            continue
        if info.get("format") != "DICOM":
            continue
        if info["problems"]:
            bad.append({"file": str(path), "reason": f"{path}: " + "; ".join(info["problems"])})
            continue
        by_patient[str(info.get("patient_id") or "")].append(info)
    return by_patient, bad


@dataclass
class OaiBuildReport:
    written: list[Path] = field(default_factory=list)
    unmatched: list[dict[str, str]] = field(default_factory=list)
    ambiguous: list[dict[str, str]] = field(default_factory=list)
    bad_files: list[dict[str, str]] = field(default_factory=list)
    datalists: Datalists | None = None


def _pick(candidates: list[dict], side: str) -> tuple[dict | None, int]:
    usable = [c for c in candidates if (c.get("laterality") or "").upper() not in ({"L", "R"} - {side})]
    preferred = [c for c in usable if SERIES_HINT in (c.get("series_description") or "").lower()]
    pool = sorted(preferred or usable, key=lambda c: c["path"])
    return (pool[0] if pool else None), len(pool)


def build_oai_dataset(oai_dir: str | os.PathLike, csv_path: str | os.PathLike, out_dir: str | os.PathLike,
                      n_folds: int = 5, seed: int = 42, progress: bool = True) -> OaiBuildReport:
    """Write one ground-truth JSON per matched OAI radiograph into ``out_dir`` and build the datalists.

    Goes on past unreadable files and unmatched rows; everything skipped is in the report
    (and the datalists' ``bad_files``).
    """
    out_dir = Path(out_dir)
    rows, bad_rows = read_kneel_csv(csv_path)
    dicoms, bad_files = find_dicoms(oai_dir, progress)
    report = OaiBuildReport(bad_files=bad_rows + bad_files)
    per_image: dict[str, dict] = {}
    for row in rows:
        info, count = _pick(dicoms.get(row.subject_id, []), row.side)
        if info is None:
            report.unmatched.append({"subject_id": row.subject_id, "side": row.side,
                                     "reason": f"no DICOM with PatientID {row.subject_id} for side {row.side}"})
            continue
        if count > 1:
            report.ambiguous.append({"subject_id": row.subject_id, "side": row.side,
                                     "reason": f"{count} candidate radiographs; used {info['path']}"})
        points = roi_to_original_px(row, info["pixel_spacing_mm"])
        h, w = info["shape"]
        if ((points[:, 0] < -0.5) | (points[:, 0] > w - 0.5) | (points[:, 1] < -0.5) | (points[:, 1] > h - 0.5)).any():
            report.unmatched.append({"subject_id": row.subject_id, "side": row.side,
                                     "reason": f"landmarks fall outside {info['path']} ({h}×{w}); wrong image?"})
            continue
        entry = per_image.setdefault(info["path"], {"info": info, "subject": row.subject_id, "knees": {}})
        entry["knees"][row.side] = KneeTruth(points, row.kl)
    for path, entry in tqdm(sorted(per_image.items()), desc="writing ground truth", disable=not progress):
        info = entry["info"]
        gt = GroundTruth(None, Path(path), {s: entry["knees"].get(s) for s in SIDES}, entry["subject"],
                         pixel_spacing_mm=None, image_size=tuple(info["shape"]),
                         extra={"source": "OAI + KNEEL annotations", "spacing_source": info["spacing_source"]})
        report.written.append(write_ground_truth(gt, out_dir / f"{entry['subject']}_{Path(path).stem}.json"))
    report.datalists = build_datalists(out_dir, n_folds, seed, progress)
    report.datalists.bad_files = report.bad_files + report.datalists.bad_files
    return report
