"""Real knee crops with the KNEEL annotations: reading, per-crop registration, split and datalists.

The crop set (single-knee 224 px PNG crops around the joint, CLAHE-processed, left knees not
mirrored, no pixel spacing) comes with each knee's KNEEL annotation in the release's 140 mm ROI
at 0.3 mm. The annotation's *shape* is exact; its *pose* in the crop is not known (the crops were
cut by a knee detector, so offset and scale differ per crop). Registration estimates that pose:

* round 0 starts from the crude constant mapping shipped with the set;
* each round runs a landmark model on every crop (stage 2 around the crop centre, then re-centred
  on landmark 4, as the pipeline does) and fits the annotation shape onto the prediction with a
  robust (Huber) similarity — offset, scale and rotation; the scale gives the crop's pixel
  spacing, since the annotation is at 0.3 mm;
* a crop whose fit does not hold (large residuals, an implausible spacing or rotation, a pose
  that still moves between rounds) is reported and left out of every datalist.

``kneel build-oai-crops`` runs a round and writes the registered ground truth, the datalists
(the project's subject-wise split) and the pictures; see ``docs/real_knees.md``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..landmarks import SIDES
from ..similarity import apply_similarity, fit_similarity, robust_similarity, similarity_angle_deg, similarity_scale
from .folds import patient_folds

__all__ = ["ANNOTATION_SPACING_MM", "NOMINAL_CROP_SPACING_MM", "CropSetError", "CropRecord", "RegistrationLimits",
           "read_crop_reference", "approx_pose", "annotation_in_crop", "predict_crop", "predict_crops",
           "register_round",
           "make_split", "read_split", "default_split_path", "crop_datalist_items",
           "pose_spacing_mm", "latest_poses", "build_crop_dataset",
           "REGISTRATION_FORMAT", "read_registration", "write_registration"]

ANNOTATION_SPACING_MM = 0.3  # the KNEEL annotation's ROI pixels
NOMINAL_CROP_SPACING_MM = 0.45  # the crop set's nominal field (~100 mm over 224 px)
REGISTRATION_FORMAT = "kneel-monai/crop-registration"
SPLIT_FORMAT = "kneel-monai/crop-split"
_N = 16


class CropSetError(ValueError):
    """The crop set (or one of its records) cannot be used; the message names the file or key."""


@dataclass
class CropRecord:
    key: str
    subject_id: str
    side: str  # "R" or "L" (patient's side; left crops are not mirrored)
    kl: int | None
    image: Path
    annotation: np.ndarray  # (16, 2) the KNEEL annotation, 0.3 mm ROI pixels as in the CSV
    approx_px: np.ndarray  # (16, 2) the set's constant mapping into the crop


def _points(record: dict, field: str, key: str) -> np.ndarray:
    value = record.get(field)
    try:
        pts = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CropSetError(f"{key}: {field!r} is not a list of [x, y] points") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) != _N:
        count = len(value) if isinstance(value, list) else "no"
        raise CropSetError(f"{key}: {field!r} has {count} points of shape {pts.shape[1:] or '()'}, "
                           f"expected {_N} [x, y]")
    if not np.isfinite(pts).all():
        raise CropSetError(f"{key}: {field!r} has non-finite coordinates")
    return pts


def _check_png(path: Path, key: str) -> None:
    """A crop must decode as a 2-D image (a truncated or corrupt file is named here, not mid-training)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            size = im.size
    except Exception as err:  # noqa: BLE001 — PIL raises many kinds for a bad file
        raise CropSetError(f"{key}: image {path} cannot be read ({type(err).__name__}: {err})") from None
    if min(size) < 32:
        raise CropSetError(f"{key}: image {path} is {size[0]}×{size[1]} px, too small for a knee crop")


def read_crop_reference(folder: str | os.PathLike, reference: str = "reference.json"
                        ) -> tuple[list[CropRecord], list[dict[str, str]]]:
    """The crop set's records; ``(records, problems)`` — a record that cannot be used is named in
    ``problems`` (its key and why: wrong point count, missing or unreadable image …) and skipped."""
    folder = Path(folder).resolve()  # datalists name the images by absolute path
    ref_path = folder / reference
    try:
        data = json.loads(ref_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CropSetError(f"{ref_path}: cannot read the crop reference ({err})") from None
    if not isinstance(data, list):
        raise CropSetError(f"{ref_path}: expected a list of crop records")
    records, problems = [], []
    for i, rec in enumerate(data):
        key = str(rec.get("key", f"record {i}")) if isinstance(rec, dict) else f"record {i}"
        try:
            if not isinstance(rec, dict):
                raise CropSetError(f"{key}: not an object")
            side = str(rec.get("side", "")).upper()
            if side not in SIDES:
                raise CropSetError(f"{key}: side must be 'R' or 'L', got {rec.get('side')!r}")
            image = folder / f"{key}.png"
            if not image.is_file():
                raise CropSetError(f"{key}: image {image} is missing")
            _check_png(image, key)
            kl = rec.get("kl")
            records.append(CropRecord(key, str(rec.get("subject_id", key[:-1])), side,
                                      None if kl is None else int(kl), image,
                                      _points(rec, "landmarks_roi_0.3mm", key),
                                      _points(rec, "landmarks_crop_px_approx", key)))
        except CropSetError as err:
            problems.append({"key": key, "reason": str(err)})
    return records, problems


# ---------------------------------------------------------------------------------------------
# poses
# ---------------------------------------------------------------------------------------------
def approx_pose(record: CropRecord) -> np.ndarray:
    """The set's constant mapping (annotation → crop px) as a 2×3 similarity: the registration's start."""
    return fit_similarity(record.annotation, record.approx_px)


def annotation_in_crop(record: CropRecord, pose: np.ndarray) -> np.ndarray:
    """The annotation's 16 points in the crop's pixels under ``pose``."""
    return apply_similarity(pose, record.annotation)


def pose_spacing_mm(pose: np.ndarray) -> float:
    """The crop's pixel spacing implied by ``pose`` (annotation pixels are 0.3 mm)."""
    return ANNOTATION_SPACING_MM / similarity_scale(pose)


@dataclass(frozen=True)
class RegistrationLimits:
    """When a crop's registration is not trusted (it is then left out and reported).

    Attributes:
        median_residual_mm: median distance between the fitted annotation and the prediction.
        spacing_mm: plausible crop pixel spacings (the set's field is ~100 mm over 224 px).
        max_abs_angle_deg: the crops are cut axis-aligned; a large rotation is a failed fit.
        max_shift_mm: how far the registered landmarks may still move from the previous round.
    """

    median_residual_mm: float = 2.0
    spacing_mm: tuple[float, float] = (0.33, 0.6)
    max_abs_angle_deg: float = 10.0
    max_shift_mm: float = 2.0


def predict_crop(predictor: Any, image: Any, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Stage 2 on one knee crop as the pipeline runs it: around the image centre, then re-centred on
    the predicted landmark 4. ``image``: a crop read with its spacing and normalised (the predictor's
    ``_normalise``). Returns ``(landmarks (16, 2) image px, confidence (16,))``."""
    h, w = image.shape[-2:]
    return predictor.refined_landmarks(image, [(side, np.array([(w - 1) / 2, (h - 1) / 2]))], refine=True)[0]


def predict_crops(predictor: Any, records: list[CropRecord], spacing_mm: dict[str, float],
                  progress: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """:func:`predict_crop` on every record: ``{key: (landmarks (16, 2) crop px, confidence (16,))}``;
    ``spacing_mm`` gives each crop's current spacing estimate."""
    from tqdm import tqdm

    from ..io import read_radiograph

    return {rec.key: predict_crop(predictor, predictor._normalise(read_radiograph(rec.image, spacing_mm[rec.key])),
                                  rec.side)
            for rec in tqdm(records, desc="predicting crops", unit="crop", disable=not progress)}


def register_round(records: list[CropRecord], predictions: dict[str, tuple[np.ndarray, np.ndarray]],
                   previous: dict[str, np.ndarray] | None = None, limits: RegistrationLimits = RegistrationLimits(),
                   delta_mm: float = 1.0, judge_movement: bool = True) -> dict[str, dict[str, Any]]:
    """Fit each crop's annotation onto its prediction (Huber similarity); judge the fit.

    ``judge_movement``: whether a pose that moved more than ``limits.max_shift_mm`` since
    ``previous`` fails (not after round 0, the set's crude mapping, which the first model round
    is meant to move).

    Returns ``{key: {"pose": 2×3 list, "spacing_mm", "angle_deg", "median_residual_mm",
    "residual_mm" (16), "shift_mm" (mean landmark move from ``previous``, or None), "ok", "reason"}}``.
    """
    out = {}
    for rec in records:
        pred, conf = predictions[rec.key]
        prev = None if previous is None else previous.get(rec.key)
        judge_shift = prev is not None and judge_movement
        start = prev if prev is not None else approx_pose(rec)
        delta_px = delta_mm / pose_spacing_mm(start)
        pose, res_px = robust_similarity(rec.annotation, pred, weights=np.clip(conf, 0.05, None), delta=delta_px)
        spacing = pose_spacing_mm(pose)
        res_mm = res_px * spacing
        angle = similarity_angle_deg(pose)
        shift = None
        if prev is not None:
            moved = annotation_in_crop(rec, pose) - annotation_in_crop(rec, prev)
            shift = float(np.linalg.norm(moved, axis=1).mean() * spacing)
        reasons = []
        if np.median(res_mm) > limits.median_residual_mm:
            reasons.append(f"median residual {np.median(res_mm):.2f} mm > {limits.median_residual_mm} mm")
        if not limits.spacing_mm[0] <= spacing <= limits.spacing_mm[1]:
            reasons.append(f"spacing {spacing:.3f} mm outside {limits.spacing_mm[0]}–{limits.spacing_mm[1]} mm")
        if abs(angle) > limits.max_abs_angle_deg:
            reasons.append(f"rotation {angle:.1f}° beyond ±{limits.max_abs_angle_deg}°")
        if judge_shift and shift > limits.max_shift_mm:
            reasons.append(f"pose still moving: {shift:.2f} mm since the previous round > {limits.max_shift_mm} mm")
        out[rec.key] = {"pose": np.round(pose, 8).tolist(), "spacing_mm": round(spacing, 5),
                        "angle_deg": round(angle, 3), "median_residual_mm": round(float(np.median(res_mm)), 4),
                        "residual_mm": np.round(res_mm, 4).tolist(),
                        "shift_mm": None if shift is None else round(shift, 4),
                        "ok": not reasons, "reason": "; ".join(reasons)}
    return out


def _read_json(path: Path, fmt: str, what: str) -> dict[str, Any]:
    """A project JSON file of format ``fmt``; CropSetError naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CropSetError(f"{path}: cannot read the {what} ({err})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise CropSetError(f"{path}: not a {what} (format is not {fmt!r})")
    return data


def read_registration(path: str | os.PathLike) -> dict[str, Any]:
    return _read_json(Path(path), REGISTRATION_FORMAT, "crop registration")


def write_registration(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    return atomic_write_text(path, json.dumps(dict(data, format=REGISTRATION_FORMAT), indent=1, allow_nan=False))


def latest_poses(registration: dict[str, Any]) -> dict[str, np.ndarray]:
    """The newest round's pose of every crop."""
    rounds = registration.get("rounds") or []
    if not rounds:
        return {}
    return {k: np.asarray(v["pose"], dtype=np.float64) for k, v in rounds[-1]["crops"].items()}


# ---------------------------------------------------------------------------------------------
# the split and datalists
# ---------------------------------------------------------------------------------------------
def default_split_path() -> Path:
    """The project's fixed split of the crop set (shipped with the library)."""
    return Path(__file__).with_name("oai_crops_split.json")


def make_split(records: list[CropRecord], seed: int = 42) -> dict[str, Any]:
    """Subject-wise, KL-stratified split: 5 folds (seed 42); fold 0 → test, fold 1 → validation, the rest train."""
    folds = patient_folds([r.subject_id for r in records], [r.kl for r in records], 5, seed)
    part_of = {0: "test", 1: "validation"}
    parts: dict[str, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: r.key):
        parts[r.key] = {"subject_id": r.subject_id, "kl": r.kl, "part": part_of.get(folds[r.subject_id], "train")}
    return {"format": SPLIT_FORMAT, "seed": seed,
            "method": "kneel_monai.data.folds.patient_folds(subjects, kl, 5, seed): fold 0 test, fold 1 validation, "
                      "folds 2-4 train", "crops": parts}


def read_split(path: str | os.PathLike | None = None) -> dict[str, str]:
    """``{key: "train" | "validation" | "test"}`` from a split file (default: the shipped one)."""
    data = _read_json(Path(path) if path is not None else default_split_path(), SPLIT_FORMAT, "crop split")
    return {k: v["part"] for k, v in data["crops"].items()}


def crop_datalist_items(records: list[CropRecord], poses: dict[str, np.ndarray], split: dict[str, str],
                        usable: set[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Landmark-stage datalist items of the registered crops, by split part.

    Training items get fold 1 and validation items fold 0 (so ``fold=0`` of the training stage
    validates on the validation part); test items go to their own list. Crops not in ``usable``
    (failed registration) and crops the split does not know are left out.
    """
    parts: dict[str, list[dict[str, Any]]] = {"train": [], "validation": [], "test": []}
    for rec in records:
        part = split.get(rec.key)
        if part is None or rec.key not in poses or (usable is not None and rec.key not in usable):
            continue
        pose = poses[rec.key]
        parts[part].append({
            "image": str(rec.image), "spacing_mm": [pose_spacing_mm(pose)] * 2, "side": rec.side,
            "landmarks_px": np.round(annotation_in_crop(rec, pose), 4).tolist(), "subject_id": rec.subject_id,
            "kl": rec.kl, "fold": 0 if part == "validation" else 1, "source": "oai_crops", "key": rec.key,
        })
    return parts


# ---------------------------------------------------------------------------------------------
# one build: a registration round (or the start) → datalists
# ---------------------------------------------------------------------------------------------
def build_crop_dataset(crops_dir: str | os.PathLike, out_dir: str | os.PathLike, model: str | os.PathLike | None = None,
                       synthetic: list[str | os.PathLike] = (), split: str | os.PathLike | None = None,
                       limits: RegistrationLimits = RegistrationLimits(), device: str = "cpu",
                       keep_failed: bool = False, report: bool = False, progress: bool = True) -> dict[str, Any]:
    """Register the crop set one more round and write its datalists.

    * no ``out_dir/registration.json`` yet: round 0 is the set's constant mapping (every crop kept);
    * ``model`` (a landmark model directory): a new round — predictions of that model, a robust fit
      per crop starting from the previous round, the crops whose fit fails left out;
    * writes ``landmark_datalist.json`` (train part fold 1, validation part fold 0, plus every knee of
      the ``synthetic`` folders — ``kneel synth`` outputs — in fold 1), ``landmark_test_datalist.json``
      (the test part, never trained or tuned on) and ``registration.json`` (every round).

    ``keep_failed``: keep the crops whose fit failed in the datalists too — for an intermediate round,
    whose model is still learning (leaving its hard knees out would teach the next model only the
    easy ones); the final round's datalists must leave them out (the default).
    ``report``: also write the registration's pictures and table (:mod:`.oai_crops_report`) into
    ``out_dir``; their paths are the summary's ``"report"``.

    Returns a summary: crops per part, problems (records refused, with their keys), excluded crops.
    """
    from .datalists import build_datalists, write_datalist

    out = Path(out_dir)
    records, problems = read_crop_reference(crops_dir)
    if not records:
        raise CropSetError(f"{crops_dir}: no usable crop ({len(problems)} refused)")
    reg_path = out / "registration.json"
    registration = read_registration(reg_path) if reg_path.is_file() else {"rounds": []}
    if not registration["rounds"]:
        poses = {r.key: approx_pose(r) for r in records}
        registration["rounds"].append({"round": 0, "model": None, "crops": {
            k: {"pose": np.round(pose, 8).tolist(), "spacing_mm": round(pose_spacing_mm(pose), 5), "ok": True,
                "reason": ""} for k, pose in poses.items()}})
    if model is not None:
        from ..inference import KneelPredictor, default_model_dirs

        previous = latest_poses(registration)
        predictor = KneelPredictor(default_model_dirs()[0], model, device=device, refine=True)
        spacing = {r.key: pose_spacing_mm(previous[r.key]) if r.key in previous else NOMINAL_CROP_SPACING_MM
                   for r in records}
        predictions = predict_crops(predictor, records, spacing, progress=progress)
        crops = register_round(records, predictions, previous, limits,
                               judge_movement=registration["rounds"][-1]["model"] is not None)
        registration["rounds"].append({"round": len(registration["rounds"]), "model": str(model), "crops": crops})
    write_registration(reg_path, registration)
    latest = registration["rounds"][-1]["crops"]
    poses = {k: np.asarray(v["pose"]) for k, v in latest.items()}
    usable = None if keep_failed else {k for k, v in latest.items() if v["ok"]}
    parts = crop_datalist_items(records, poses, read_split(split), usable)
    synthetic_items = []
    for folder in synthetic:
        lists = build_datalists(Path(folder).resolve(), progress=progress)
        synthetic_items += [dict(item, fold=1, source="synthetic") for item in lists.landmarks]
    write_datalist(out / "landmark_datalist.json", "landmarks", parts["train"] + parts["validation"] + synthetic_items)
    write_datalist(out / "landmark_test_datalist.json", "landmarks", parts["test"])
    excluded = {k: v["reason"] for k, v in latest.items() if not v["ok"]}
    written = []
    if report:
        from .oai_crops_report import write_registration_report

        written = write_registration_report(registration, records, out, split)
    return {"round": registration["rounds"][-1]["round"], "crops": len(records),
            "train": len(parts["train"]), "validation": len(parts["validation"]), "test": len(parts["test"]),
            "synthetic_knees": len(synthetic_items), "refused": problems, "excluded": excluded,
            "report": [str(p) for p in written]}
