"""What a prediction is, as objects and as its JSON (``kneel-monai/prediction`` v1): a radiograph's
:class:`RadiographResult` with one :class:`KneeResult` per side.

numpy only — no torch — so a client that only reads predictions (the Slicer module's label client,
a notebook reading a cohort's JSONs) loads it without the inference stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["PREDICTION_FORMAT", "KneeResult", "RadiographResult"]

PREDICTION_FORMAT = "kneel-monai/prediction"


@dataclass
class KneeResult:
    """One knee. ``present`` False means no knee was found on that side (``reason`` says why).

    ``quality`` is ``"ok"`` or ``"check"`` (``quality_reasons`` says why a knee needs a look; see
    :func:`kneel_monai.quality.assess_knee`); ``spread_mm`` is the per-landmark MC-dropout spread
    when the predictor was asked for it.
    """

    side: str
    present: bool
    landmarks_px: np.ndarray | None = None  # (16, 2) (x, y) in the original radiograph's pixels
    landmarks_mm: np.ndarray | None = None  # (16, 2) image-plane millimetres
    confidence: np.ndarray | None = None  # (16,) in [0, 1]
    centre_px: np.ndarray | None = None  # stage-1 knee centre, (x, y) pixels
    reason: str = ""
    measurements: dict[str, float] = field(default_factory=dict)
    quality: str = ""
    quality_reasons: list[str] = field(default_factory=list)
    spread_mm: np.ndarray | None = None  # (16,) MC-dropout spread (RMS distance to the mean), mm
    shape_distance: float | None = None  # how unlike annotated knees the 16 points are (shape_plausibility)
    side_source: str = ""  # how the side was decided (kneel_monai.detection.SIDE_SOURCES)
    roi_zoom: float | None = None  # the ROI zoom whose answer was kept (1: the image's spacing as read)

    def to_dict(self) -> dict[str, Any]:
        def lst(a):
            return None if a is None else np.round(np.asarray(a, dtype=float), 4).tolist()

        return {"side": self.side, "present": self.present, "landmarks_px": lst(self.landmarks_px),
                "landmarks_mm": lst(self.landmarks_mm), "confidence": lst(self.confidence),
                "centre_px": lst(self.centre_px), "reason": self.reason,
                "measurements": {k: round(float(v), 4) for k, v in self.measurements.items()},
                "quality": self.quality, "quality_reasons": list(self.quality_reasons),
                "spread_mm": lst(self.spread_mm),
                "shape_distance": None if self.shape_distance is None else round(float(self.shape_distance), 3),
                "side_source": self.side_source, "roi_zoom": self.roi_zoom}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KneeResult:
        """The inverse of :meth:`to_dict` (arrays back as numpy)."""
        def arr(v):
            return None if v is None else np.asarray(v, dtype=np.float64)

        return cls(side=d["side"], present=bool(d["present"]), landmarks_px=arr(d.get("landmarks_px")),
                   landmarks_mm=arr(d.get("landmarks_mm")), confidence=arr(d.get("confidence")),
                   centre_px=arr(d.get("centre_px")), reason=d.get("reason", ""),
                   measurements=dict(d.get("measurements") or {}), quality=d.get("quality", ""),
                   quality_reasons=list(d.get("quality_reasons") or []), spread_mm=arr(d.get("spread_mm")),
                   shape_distance=d.get("shape_distance"), side_source=d.get("side_source", ""),
                   roi_zoom=d.get("roi_zoom"))


@dataclass
class RadiographResult:
    path: str
    image_size: tuple[int, int]
    pixel_spacing_mm: tuple[float, float]
    spacing_source: str
    knees: dict[str, KneeResult]
    timings_s: dict[str, float] = field(default_factory=dict)
    view: dict[str, Any] = field(default_factory=dict)  # {"verdict": "ap_knee" | "no_ap_knee", "knees", "reason"}
    detection: dict[str, Any] = field(default_factory=dict)  # how the knees were looked for

    def to_dict(self) -> dict[str, Any]:
        return {"format": PREDICTION_FORMAT, "format_version": 1, "image": self.path,
                "image_size": list(self.image_size), "pixel_spacing_mm": list(self.pixel_spacing_mm),
                "spacing_source": self.spacing_source, "knees": {s: k.to_dict() for s, k in self.knees.items()},
                "view": dict(self.view), "detection": dict(self.detection),
                "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RadiographResult:
        """Read back what :meth:`to_dict` wrote (a prediction JSON)."""
        if d.get("format") != PREDICTION_FORMAT:
            raise ValueError(f"not a kneel-monai prediction (format is not {PREDICTION_FORMAT!r})")
        return cls(path=d["image"], image_size=tuple(d["image_size"]), pixel_spacing_mm=tuple(d["pixel_spacing_mm"]),
                   spacing_source=d.get("spacing_source", ""),
                   knees={s: KneeResult.from_dict(k) for s, k in d["knees"].items()},
                   timings_s=dict(d.get("timings_s") or {}), view=dict(d.get("view") or {}),
                   detection=dict(d.get("detection") or {}))
