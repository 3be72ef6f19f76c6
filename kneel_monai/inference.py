"""The two-stage KNEEL pipeline (SPEC §2): radiograph → knee centres → 16 landmarks per knee → refinement.

One API for every face (CLI, bundle, Slicer, MONAI Label)::

    predictor = KneelPredictor.from_dirs(roi_model_dir, landmark_model_dir, device="cpu")
    result = predictor.predict_file("knee.dcm")          # RadiographResult
    result.knees["R"].landmarks_px                         # (16, 2) (x, y) original pixels

Geometry is the transforms' (:mod:`kneel_monai.transforms`): every crop/resample keeps the image
affine exact, so network coordinates map back to the radiograph through two affines.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import CenterSpatialCrop, SpatialPad

from .io import read_radiograph
from .landmarks import KNEE_CENTRE_ID
from .model_io import KneelModel, load_model
from .networks import prepare_for_inference
from .transforms import CropRoi, PercentileNormalise, ResampleToSpacing, SplitHalves, points_between, points_to_mm
from .transforms.dictionary import SIDES

__all__ = ["KneeResult", "RadiographResult", "KneelPredictor", "heatmap_confidence", "resolve_device"]


@dataclass
class KneeResult:
    """One knee. ``present`` False means no knee was found on that side (``reason`` says why)."""

    side: str
    present: bool
    landmarks_px: np.ndarray | None = None  # (16, 2) (x, y) in the original radiograph's pixels
    landmarks_mm: np.ndarray | None = None  # (16, 2) image-plane millimetres
    confidence: np.ndarray | None = None  # (16,) in [0, 1]
    centre_px: np.ndarray | None = None  # stage-1 knee centre, (x, y) pixels
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        def lst(a):
            return None if a is None else np.round(np.asarray(a, dtype=float), 4).tolist()

        return {"side": self.side, "present": self.present, "landmarks_px": lst(self.landmarks_px),
                "landmarks_mm": lst(self.landmarks_mm), "confidence": lst(self.confidence),
                "centre_px": lst(self.centre_px), "reason": self.reason}


@dataclass
class RadiographResult:
    path: str
    image_size: tuple[int, int]
    pixel_spacing_mm: tuple[float, float]
    spacing_source: str
    knees: dict[str, KneeResult]
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": "kneel-monai/prediction", "format_version": 1, "image": self.path,
                "image_size": list(self.image_size), "pixel_spacing_mm": list(self.pixel_spacing_mm),
                "spacing_source": self.spacing_source, "knees": {s: k.to_dict() for s, k in self.knees.items()},
                "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()}}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; asking for CUDA without one is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but no CUDA GPU is available to torch")
    return torch.device(device)


def heatmap_confidence(heatmaps: torch.Tensor, coords: torch.Tensor, beta: float = 1.0, radius: int = 1) -> torch.Tensor:
    """Per-landmark confidence: the softmax probability mass within ``radius`` heat-map pixels of the prediction.

    ``heatmaps`` ``(B, M, h, w)`` logits, ``coords`` ``(B, M, 2)`` normalised → ``(B, M)`` in [0, 1]:
    near 1 for a sharp, single peak where the point was placed; small when the map is diffuse
    or multi-modal (no knee, or an ambiguous one).
    """
    b, m, h, w = heatmaps.shape
    prob = torch.softmax(heatmaps.reshape(b, m, -1).float() * beta, dim=-1).reshape(b, m, h, w)
    cx = (coords[..., 0] * w).floor().long().clamp(0, w - 1)
    cy = (coords[..., 1] * h).floor().long().clamp(0, h - 1)
    ys = torch.arange(h, device=heatmaps.device).view(1, 1, h, 1)
    xs = torch.arange(w, device=heatmaps.device).view(1, 1, 1, w)
    window = ((ys - cy[..., None, None]).abs() <= radius) & ((xs - cx[..., None, None]).abs() <= radius)
    return (prob * window).sum(dim=(-2, -1)).clamp(0, 1)


class KneelPredictor:
    """Two-stage landmark localisation with refinement, on any radiograph the reader accepts.

    Args:
        roi_model, landmark_model: :class:`KneelModel` or model directories.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        refine: re-centre each ROI on the predicted landmark 4 and run stage 2 again (SPEC §2.5).
        min_confidence: a knee whose mean landmark confidence is below this is reported absent.
        fast: fold conv-BN and use channels-last (exact; see ``prepare_for_inference``).
    """

    def __init__(self, roi_model: KneelModel | str | os.PathLike, landmark_model: KneelModel | str | os.PathLike,
                 device: str = "auto", refine: bool = True, min_confidence: float = 0.05, fast: bool = True) -> None:
        self.device = resolve_device(device)
        self.roi = roi_model if isinstance(roi_model, KneelModel) else load_model(roi_model, self.device)
        self.landmarks = landmark_model if isinstance(landmark_model, KneelModel) else load_model(landmark_model,
                                                                                                    self.device)
        if self.roi.task != "roi" or self.landmarks.task != "landmarks":
            raise ValueError(f"expected an 'roi' and a 'landmarks' model, got {self.roi.task!r} and "
                             f"{self.landmarks.task!r}")
        self.refine, self.min_confidence = refine, float(min_confidence)
        prep = (lambda n: prepare_for_inference(n).to(self.device)) if fast else (lambda n: n.to(self.device).eval())
        self._roi_nets = [prep(n) for n in self.roi.networks]
        self._lm_nets = [prep(n) for n in self.landmarks.networks]
        lp = self.landmarks.preprocessing
        self._roi_crop = CropRoi(size_mm=float(lp.get("roi_size_mm", 140.0)), spacing_mm=float(lp["spacing_mm"]))
        self._normalise = PercentileNormalise(5, 99)

    @classmethod
    def from_dirs(cls, roi_dir: str | os.PathLike, landmark_dir: str | os.PathLike, **kwargs: Any) -> KneelPredictor:
        return cls(roi_dir, landmark_dir, **kwargs)

    # ---- network input and output
    @torch.inference_mode()
    def _run(self, nets: list, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Fold-averaged coordinates (B, M, 2) normalised and confidences (B, M)."""
        coords, confidences = [], []
        for net in nets:
            c, hm = net.forward_with_heatmaps(x)
            coords.append(c)
            confidences.append(heatmap_confidence(hm, c, net.soft_argmax.beta))
        return (torch.stack(coords).mean(0).double().cpu().numpy(), torch.stack(confidences).mean(0).cpu().numpy())

    def _pad_crop(self, img: MetaTensor, model: KneelModel) -> MetaTensor:
        pre = model.preprocessing
        padded = SpatialPad(spatial_size=(pre["pad_size"], pre["pad_size"]))(img)
        return CenterSpatialCrop(roi_size=(pre["crop_size"], pre["crop_size"]))(padded)

    def _to_original(self, coords: np.ndarray, crop: MetaTensor, original: MetaTensor, offset: float) -> np.ndarray:
        h, w = crop.shape[-2:]
        px = coords * np.array([w, h]) - offset
        return points_between(px, crop.affine, original.affine)

    # ---- the pipeline
    def knee_centres(self, image: MetaTensor) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Stage 1: the knee-joint centre of each image half, original pixels, and its confidence."""
        low = ResampleToSpacing(float(self.roi.preprocessing["spacing_mm"]))(image)
        halves = [self._pad_crop(h, self.roi) for h in SplitHalves()(low)]
        coords, conf = self._run(self._roi_nets, self.roi.network_input(halves, self.device))
        centres = {s: self._to_original(coords[i], halves[i], image, self.roi.pixel_offset)[0]
                   for i, s in enumerate(SIDES)}
        return centres, {s: float(conf[i, 0]) for i, s in enumerate(SIDES)}

    def knee_landmarks(self, image: MetaTensor, centres: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Stage 2 around the given centres: ``{side: (landmarks (16, 2) original px, confidence (16,))}``."""
        sides = list(centres)
        crops = [self._pad_crop(self._roi_crop(image, centres[s], mirror=s == "L"), self.landmarks) for s in sides]
        coords, conf = self._run(self._lm_nets, self.landmarks.network_input(crops, self.device))
        offset = self.landmarks.pixel_offset
        return {s: (self._to_original(coords[i], crops[i], image, offset), conf[i]) for i, s in enumerate(sides)}

    def predict_image(self, image: MetaTensor, path: str = "") -> RadiographResult:
        """Both knees of a radiograph already read (``read_radiograph``)."""
        t0 = time.perf_counter()
        norm = self._normalise(image)
        t1 = time.perf_counter()
        centres, centre_conf = self.knee_centres(norm)
        t2 = time.perf_counter()
        found = self.knee_landmarks(norm, centres)
        t3 = time.perf_counter()
        if self.refine:
            found = self.knee_landmarks(norm, {s: found[s][0][KNEE_CENTRE_ID] for s in found})
        t4 = time.perf_counter()
        h, w = image.shape[-2:]
        knees = {}
        for side in SIDES:
            pts, conf = found[side]
            inside = (pts[:, 0] > -0.5).all() and (pts[:, 0] < w - 0.5).all() and (pts[:, 1] > -0.5).all() \
                and (pts[:, 1] < h - 0.5).all()
            mean_conf = float(np.mean(conf))
            if mean_conf < self.min_confidence or not inside:
                reason = (f"mean landmark confidence {mean_conf:.3f} < {self.min_confidence}" if inside
                          else "predicted landmarks fall outside the image")
                knees[side] = KneeResult(side, False, centre_px=centres[side], reason=f"no knee found ({reason})")
                continue
            knees[side] = KneeResult(side, True, pts, points_to_mm(pts, image.affine), conf, centres[side])
        meta = image.meta
        spacing = tuple(float(v) for v in meta.get("pixel_spacing_mm", (float(image.affine[0, 0]),
                                                                         float(image.affine[1, 1]))))
        return RadiographResult(
            path=path or str(meta.get("filename_or_obj", "")), image_size=(int(h), int(w)), pixel_spacing_mm=spacing,
            spacing_source=str(meta.get("spacing_source", "")), knees=knees,
            timings_s={"normalise": t1 - t0, "stage1": t2 - t1, "stage2": t3 - t2, "refine": t4 - t3},
        )

    def predict_file(self, path: str | os.PathLike, spacing_mm: float | tuple[float, float] | None = None
                     ) -> RadiographResult:
        t0 = time.perf_counter()
        image = read_radiograph(path, spacing_mm)
        read_s = time.perf_counter() - t0
        result = self.predict_image(image, str(path))
        result.timings_s = {"read": read_s, **result.timings_s}
        return result


def default_model_dirs() -> tuple[Path, Path]:
    """The shipped default models (in the bundle's ``models/`` folder of this repository)."""
    root = Path(__file__).resolve().parents[1] / "bundles" / "kneel_landmarks" / "models"
    return root / "roi", root / "landmarks"
