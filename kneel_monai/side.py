"""Which side a lone knee is, from its anatomy: the fibular head is lateral.

Two pieces of evidence, each measured on the real OAI crops run as single-knee images through the
whole pipeline (``benchmarks/eval_single_knee_side.py``, ``docs/real_knees.md``):

* **the fibula** (:func:`fibula_evidence`): on an AP/PA view in the radiological convention the fibular
  head lies below the lateral tibial plateau margin, so the grey level just beyond and below the
  tibial margin is higher on the lateral side — the image's left for a right knee. Alone it names
  the right side for 501 of the 511 crops where it is seen;
* **the landmark model** (``confidence``): run on the knee unmirrored and mirrored, the orientation of
  its own side gives surer heat-maps (462 of 523 alone).

Where they agree, on landmarks that pass the quality check, the side is called sure (397 of 523 crops,
none wrongly); where they
disagree, the fibula cannot be seen (cut off by the field, grey levels that do not show bone brighter
than soft tissue) or the landmarks are flagged, the fibula's answer is kept as a guess to check
(:func:`decide_side`). Both read the knee through its landmarks, and on knees imaged unlike OAI's
(real bilateral standing films) they can agree on the wrong side — always, there, on landmarks
already flagged ``check``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .landmarks import SIDES

__all__ = ["FibulaBoxes", "SideDecision", "fibula_boxes", "fibula_evidence", "decide_side"]


@dataclass(frozen=True)
class FibulaBoxes:
    """Where the fibular head is looked for, in tibial plateau widths (landmark 0 to 8) from each
    tibial margin: ``outside`` beyond it and ``inside`` within it, from ``top`` to ``bottom`` below it.
    Chosen on the crops' validation part among five boxes that all scored 96–99 %."""

    outside: float = 0.15
    inside: float = 0.10
    top: float = 0.20
    bottom: float = 0.50
    #: a box with less than this fraction of its area inside the image gives no evidence (the fibula cut off by
    #: the field; 0.3 saw 7 more validation crops than 0.5, as often right)
    min_inside: float = 0.3


def fibula_boxes(landmarks_px: np.ndarray, boxes: FibulaBoxes = FibulaBoxes()
                 ) -> tuple[tuple[float, float, float, float], tuple[float, float, float, float],
                            tuple[float, float, float, float]]:
    """``(image-left box, image-right box, tibia box)`` as ``(x0, x1, y0, y1)`` pixels below the two
    tibial plateau margins (landmarks 0 and 8, whichever lies left) and between them."""
    pts = np.asarray(landmarks_px, dtype=np.float64)
    left, right = sorted((pts[0], pts[8]), key=lambda p: p[0])
    width = float(np.linalg.norm(right - left))
    o, i, t, b = (boxes.outside * width, boxes.inside * width, boxes.top * width, boxes.bottom * width)
    return ((left[0] - o, left[0] + i, left[1] + t, left[1] + b),
            (right[0] - i, right[0] + o, right[1] + t, right[1] + b),
            # the tibial metaphysis between the two boxes: bone, brighter than what lies beside it
            (left[0] + 0.25 * width, right[0] - 0.25 * width, min(left[1], right[1]) + t,
             max(left[1], right[1]) + b))


def _mean_inside(pixels: np.ndarray, box: tuple[float, float, float, float], min_inside: float) -> float | None:
    x0, x1, y0, y1 = box
    h, w = pixels.shape
    area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    cx0, cx1, cy0, cy1 = (int(round(max(x0, 0))), int(round(min(x1, w))), int(round(max(y0, 0))),
                          int(round(min(y1, h))))
    if area <= 0 or cx1 - cx0 < 2 or cy1 - cy0 < 2 or (cx1 - cx0) * (cy1 - cy0) < min_inside * area:
        return None
    return float(pixels[cy0:cy1, cx0:cx1].mean())


def fibula_evidence(pixels: Any, landmarks_px: np.ndarray, boxes: FibulaBoxes = FibulaBoxes()) -> float | None:
    """How much brighter the image is below its left tibial margin than below its right one, in units of
    the image's standard deviation: > 0 puts the fibular head on the image's left (a right knee in the
    radiological convention), < 0 on its right. ``None`` when the image cannot say: a box mostly outside
    the image (the fibula cut off by the field), a flat image, or the tibia not brighter than both boxes
    (grey levels inverted, or landmarks not on a knee)."""
    img = np.asarray(pixels, dtype=np.float64)
    img = img.reshape(img.shape[-2:]) if img.ndim > 2 else img
    left_box, right_box, tibia_box = fibula_boxes(landmarks_px, boxes)
    left, right, tibia = (_mean_inside(img, b, boxes.min_inside) for b in (left_box, right_box, tibia_box))
    spread = float(img.std())
    if left is None or right is None or tibia is None or not spread > 0 or tibia <= max(left, right):
        return None
    return (left - right) / spread


@dataclass(frozen=True)
class SideDecision:
    """A lone knee's side from its anatomy; ``sure`` when the fibula and the landmark model agree on
    landmarks that pass the quality check, else ``why`` says what is missing."""

    side: str
    sure: bool
    fibula: float | None
    confidence: dict[str, float]
    why: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"side": self.side, "sure": self.sure,
                "fibula": None if self.fibula is None else round(float(self.fibula), 3),
                "confidence": {s: round(float(c), 4) for s, c in self.confidence.items()}, "why": self.why}


def decide_side(confidence: dict[str, float], fibula: float | None, fibula_margin: float = 0.1,
                confidence_margin: float = 0.0, landmarks_ok: bool = True) -> SideDecision:
    """The side of a lone knee from the mean landmark confidence of each orientation (``{"R": c, "L": c}``,
    the knee run as that side's) and its :func:`fibula_evidence`.

    Sure when the fibula says a side by at least ``fibula_margin``, the surer orientation (by at least
    ``confidence_margin``) is the same side, and the knee's landmarks — where the fibula was looked for —
    pass the quality check (``landmarks_ok``): on knees of real bilateral films read as if alone, every
    side the two pieces of evidence wrongly agreed on was read from landmarks flagged ``check``.
    Otherwise the fibula's side is the guess (on the crops it was right for 59 of the 63 knees where the
    two disagreed), or the surer orientation's when the fibula cannot be seen.
    """
    by_confidence = max(SIDES, key=lambda s: confidence[s])
    if fibula is None or not np.isfinite(fibula) or fibula == 0:
        return SideDecision(by_confidence, False, None, dict(confidence),
                            "the fibula cannot be seen (cut off by the field, or grey levels that do not show bone)")
    by_fibula = "R" if fibula > 0 else "L"
    if abs(fibula) < fibula_margin:
        why = "the fibula is barely seen on either side"
    elif by_fibula != by_confidence or abs(confidence["R"] - confidence["L"]) < confidence_margin:
        why = "the fibula and the landmark model's heat-maps do not agree"
    elif not landmarks_ok:
        why = "the landmarks the fibula was looked for from are themselves flagged"
    else:
        why = ""
    return SideDecision(by_fibula, not why, float(fibula), dict(confidence), why)
