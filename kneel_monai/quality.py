"""Per-knee quality flag: which predictions a user should look at first.

A knee is flagged ``"check"`` when any rule below fires, ``"ok"`` otherwise; the reasons are kept
so a cohort table can be sorted and filtered by them. Since 0.3.0 the confidence, spread and shape
limits are calibrated on **real knees**: the 100 validation knees of the real OAI crop set with the
shipped landmark model (``benchmarks/calibrate_quality_real.py``; ``docs/real_knees.md`` gives the
figures on the test knees): the confidence limit at the 1st percentile of the well-placed knees'
mean confidence, the spread and shape-distance limits at their 99th percentile. The measurement
ranges sit around those of the 748 annotated OAI knees — so a knee is flagged when it looks unlike
the knees the model handles well, when its 16 points do not form a knee's shape, or when its
measurements cannot be a knee's (e.g. a wrong pixel spacing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["QualityThresholds", "assess_knee"]


@dataclass(frozen=True)
class QualityThresholds:
    """Limits of a knee that needs no look.

    Attributes:
        mean_confidence: the knee's mean landmark heat-map confidence
            (:func:`~kneel_monai.inference.heatmap_confidence`). Single landmarks are a poor signal:
            points along a smooth contour have spread-out maps even when placed well.
        max_spread_mm: the largest per-landmark MC-dropout spread, when it was computed.
        plateau_width_mm: plausible tibial plateau widths (the 748 OAI knees span about 62–95 mm).
        condyle_width_mm: plausible femoral condyle widths.
        max_abs_angle_deg: plausible joint-line angles.
        max_jsw_mm: plausible joint space widths.
        max_shape_distance: the largest shape distance of the 16 points from the annotated real
            knees (:mod:`kneel_monai.shape_plausibility`), when it was computed.
    """

    mean_confidence: float = 0.44
    max_spread_mm: float = 1.3
    plateau_width_mm: tuple[float, float] = (50.0, 110.0)
    condyle_width_mm: tuple[float, float] = (45.0, 110.0)
    max_abs_angle_deg: float = 12.0
    max_jsw_mm: float = 15.0
    max_shape_distance: float = 5.0


def assess_knee(confidence: np.ndarray, measurements: dict[str, float], spread_mm: np.ndarray | None = None,
                thresholds: QualityThresholds = QualityThresholds(), shape_distance: float | None = None
                ) -> tuple[str, list[str]]:
    """``("ok" | "check", reasons)`` for one present knee."""
    t = thresholds
    reasons: list[str] = []
    if shape_distance is not None and not shape_distance <= t.max_shape_distance:
        reasons.append(f"implausible shape: distance {shape_distance:.1f} from the annotated knees > "
                       f"{t.max_shape_distance:.1f}")
    conf = np.asarray(confidence, dtype=float)
    if conf.mean() < t.mean_confidence:
        worst = int(np.argmin(conf))
        reasons.append(f"low confidence: mean {conf.mean():.2f} < {t.mean_confidence:.2f} (lowest: landmark {worst})")
    if spread_mm is not None:
        spread = np.asarray(spread_mm, dtype=float)
        widest = int(np.argmax(spread))
        if spread[widest] > t.max_spread_mm:
            reasons.append(f"uncertain: landmark {widest} MC-dropout spread {spread[widest]:.1f} mm > "
                           f"{t.max_spread_mm:.1f} mm")
    checks = (("tibial_plateau_width_mm", t.plateau_width_mm), ("femoral_condyle_width_mm", t.condyle_width_mm))
    for name, (low, high) in checks:
        value = measurements.get(name)
        if value is not None and not low <= value <= high:
            reasons.append(f"implausible {name.replace('_mm', '').replace('_', ' ')} {value:.1f} mm "
                           f"(expected {low:.0f}–{high:.0f} mm)")
    angle = measurements.get("joint_line_angle_deg")
    if angle is not None and abs(angle) > t.max_abs_angle_deg:
        reasons.append(f"implausible joint-line angle {angle:.1f}° (|angle| > {t.max_abs_angle_deg:.0f}°)")
    for name in ("lateral_jsw_mm", "medial_jsw_mm"):
        value = measurements.get(name)
        if value is not None and value > t.max_jsw_mm:
            reasons.append(f"implausible {name.split('_')[0]} joint space width {value:.1f} mm "
                           f"(> {t.max_jsw_mm:.0f} mm)")
    return ("check" if reasons else "ok"), reasons
