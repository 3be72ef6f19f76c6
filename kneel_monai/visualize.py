"""Overlay pictures: a radiograph with its landmarks (tibia red, femur green, ids), as PNG."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .landmarks import BONE_COLOURS, FEMUR_IDS, NUM_LANDMARKS, TIBIA_IDS

__all__ = ["draw_landmarks_overlay"]


def _to_display(image) -> np.ndarray:
    a = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"overlay needs a 2-D (H, W) or (1, H, W) image, got shape {a.shape}")
    lo, hi = np.percentile(a, [1, 99.5])
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)


def draw_landmarks_overlay(
    image,
    knees: Mapping[str, np.ndarray | None],
    path: str | os.PathLike,
    title: str | None = None,
    show_ids: bool = True,
    max_side_px: int = 1600,
    reference: Mapping[str, np.ndarray | None] | None = None,
) -> Path:
    """Write a PNG of ``image`` with each knee's 16 landmarks (``(x, y)`` pixels of that image).

    Tibial landmarks are red, femoral green, joined in id order; ids are written beside them
    when ``show_ids``. ``reference`` (optional, same layout) is drawn as white crosses, e.g. the
    ground truth under a prediction. Absent knees (``None``) are labelled as absent. The picture
    is at most ``max_side_px`` on its longer side; the file is written atomically.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    display = _to_display(image)
    h, w = display.shape
    scale = min(1.0, max_side_px / max(h, w))
    dpi = 100
    fig = Figure(figsize=(w * scale / dpi, h * scale / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(display, cmap="gray", vmin=0, vmax=1, interpolation="antialiased")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.axis("off")
    marker = max(3.0, 5.0 * scale * max(h, w) / 1000)
    font = max(5.0, 7.0 * scale * max(h, w) / 1000)
    for side, points in knees.items():
        if points is None:
            ax.text(w * (0.25 if side == "R" else 0.75), h * 0.05, f"{side}: no knee found", color="yellow",
                    ha="center", va="top", fontsize=2 * font)
            continue
        pts = np.asarray(points, dtype=np.float64)
        if pts.shape != (NUM_LANDMARKS, 2):
            raise ValueError(f"knee {side}: expected ({NUM_LANDMARKS}, 2) points, got {pts.shape}")
        for ids, bone in ((TIBIA_IDS, "tibia"), (FEMUR_IDS, "femur")):
            colour = BONE_COLOURS[bone]
            ax.plot(pts[list(ids), 0], pts[list(ids), 1], "-", color=colour, lw=0.8, alpha=0.7)
            ax.plot(pts[list(ids), 0], pts[list(ids), 1], "o", color=colour, ms=marker, mec="black", mew=0.4)
            if show_ids:
                dy = 1 if bone == "tibia" else -1
                for i in ids:
                    ax.annotate(str(i), pts[i], xytext=(0, 2.2 * marker * dy), textcoords="offset points",
                                color=colour, fontsize=font, ha="center", va="center")
        ax.text(pts[:, 0].mean(), pts[:, 1].min() - 0.06 * h, side, color="yellow", ha="center",
                fontsize=2 * font, fontweight="bold")
    for side, points in (reference or {}).items():
        if points is not None:
            pts = np.asarray(points, dtype=np.float64)
            ax.plot(pts[:, 0], pts[:, 1], "x", color="white", ms=marker * 1.2, mew=0.8)
    if title:
        ax.text(0.01 * w, 0.99 * h, title, color="white", fontsize=1.5 * font, va="bottom",
                bbox=dict(facecolor="black", alpha=0.6, pad=2, linewidth=0))  # readable on bright borders too
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
