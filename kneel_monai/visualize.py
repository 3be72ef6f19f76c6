"""Overlay pictures: a radiograph with its landmarks (tibia red, femur green, ids), as PNG."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .landmarks import BONE_COLOURS, FEMUR_IDS, NUM_LANDMARKS, TIBIA_IDS

__all__ = ["draw_landmarks_overlay", "draw_knee_measurements"]


def _to_display(image, max_side_px: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Grey values in [0, 1] for display, shrunk (area-averaged) to at most ``max_side_px``; and the original (H, W).

    Shrinking before drawing keeps a full-size radiograph's overlay fast (matplotlib would resample
    millions of pixels itself) and looks the same.
    """
    a = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"overlay needs a 2-D (H, W) or (1, H, W) image, got shape {a.shape}")
    h, w = a.shape
    if max_side_px and max(h, w) > max_side_px:
        from PIL import Image

        scale = max_side_px / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        a = np.asarray(Image.fromarray(a, mode="F").resize(size, Image.Resampling.BOX), dtype=np.float32)
    lo, hi = np.percentile(a, [1, 99.5])
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1), (h, w)


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

    display, (h, w) = _to_display(image, max_side_px)
    scale = min(1.0, max_side_px / max(h, w))
    dpi = 100
    fig = Figure(figsize=(display.shape[1] / dpi, display.shape[0] / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    # one picture pixel per display pixel; the extent keeps the axes in the radiograph's pixels
    ax.imshow(display, cmap="gray", vmin=0, vmax=1, interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
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
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png", pil_kwargs={"compress_level": 1}))


def draw_knee_measurements(image, landmarks_px: np.ndarray, pixel_spacing_mm: tuple[float, float],
                           path: str | os.PathLike, title: str | None = None, margin_mm: float = 20.0,
                           size_px: int = 900) -> Path:
    """A close-up of one knee with its measurements drawn (``kneel_monai.measurements``), as PNG.

    Shows the 16 landmarks, the tibial plateau line T0–T8 and the femoral condyle line F9–F15
    (their widths and the angle between them), and each compartment's joint space width as the
    segment where it is measured. ``pixel_spacing_mm`` is ``(row, col)``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .measurements import jsw_segments, knee_measurements

    pts = np.asarray(landmarks_px, dtype=np.float64)
    if pts.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected ({NUM_LANDMARKS}, 2) landmarks, got {pts.shape}")
    sr, sc = pixel_spacing_mm
    m = knee_measurements(pts * np.array([sc, sr]))
    display, (h, w) = _to_display(image)
    mx, my = margin_mm / sc, margin_mm / sr
    x0, x1 = max(pts[:, 0].min() - mx, 0), min(pts[:, 0].max() + mx, w - 1)
    y0, y1 = max(pts[:, 1].min() - 2 * my, 0), min(pts[:, 1].max() + 2 * my, h - 1)
    crop = display[int(y0): int(y1) + 1, int(x0): int(x1) + 1]
    dpi = 100
    aspect = crop.shape[0] / max(crop.shape[1], 1)
    fig = Figure(figsize=(size_px / dpi, size_px * aspect / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(crop, cmap="gray", vmin=0, vmax=1, extent=(int(x0) - 0.5, int(x1) + 0.5, int(y1) + 0.5, int(y0) - 0.5))
    ax.axis("off")
    tib, fem = BONE_COLOURS["tibia"], BONE_COLOURS["femur"]
    for ids, colour in ((TIBIA_IDS, tib), (FEMUR_IDS, fem)):
        ax.plot(pts[list(ids), 0], pts[list(ids), 1], "o", color=colour, ms=5, mec="black", mew=0.5)
        for i in ids:
            ax.annotate(str(i), pts[i], xytext=(0, -9 if colour == fem else 9), textcoords="offset points",
                        color=colour, fontsize=8, ha="center", va="center")
    for a, b, colour, label in ((0, 8, tib, f"plateau width {m['tibial_plateau_width_mm']:.1f} mm"),
                                (9, 15, fem, f"condyle width {m['femoral_condyle_width_mm']:.1f} mm")):
        ax.plot(pts[[a, b], 0], pts[[a, b], 1], "--", color=colour, lw=1.2)
        mid = pts[[a, b]].mean(0)
        ax.annotate(label, mid, xytext=(0, -40 if colour == tib else 45), textcoords="offset points", color=colour,
                    fontsize=10, ha="center", bbox=dict(facecolor="black", alpha=0.6, pad=2, linewidth=0))
    for name, (f, t) in jsw_segments(pts * np.array([sc, sr])).items():
        f, t = f / np.array([sc, sr]), t / np.array([sc, sr])
        ax.plot([f[0], t[0]], [f[1], t[1]], "-", color="yellow", lw=2.0)
        outward = 1.0 if f[0] > pts[:, 0].mean() else -1.0  # beside the segment, away from the notch
        ax.annotate(f"{name} JSW {m[name + '_jsw_mm']:.1f} mm", (f + t) / 2, xytext=(outward * 70, -25),
                    textcoords="offset points", color="yellow", fontsize=10, ha="center", va="center",
                    bbox=dict(facecolor="black", alpha=0.6, pad=2, linewidth=0))
    ax.text(0.02, 0.98, f"joint-line angle {m['joint_line_angle_deg']:+.1f}°" + (f"\n{title}" if title else ""),
            transform=ax.transAxes, color="white", fontsize=10, va="top",
            bbox=dict(facecolor="black", alpha=0.6, pad=3, linewidth=0))
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png", pil_kwargs={"compress_level": 1}))
