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


def _rgb(colour: tuple[float, float, float], alpha: float = 1.0) -> tuple[int, int, int, int]:
    return tuple(int(round(255 * c)) for c in colour) + (int(round(255 * alpha)),)  # type: ignore[return-value]


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

    Drawn with Pillow, not matplotlib: a cohort writes one per radiograph, and a figure's set-up and
    rendering cost several times the prediction's own share of it.
    """
    from PIL import Image, ImageDraw, ImageFont

    checked = {}
    for side, points in knees.items():
        pts = None if points is None else np.asarray(points, dtype=np.float64)
        if pts is not None and pts.shape != (NUM_LANDMARKS, 2):
            raise ValueError(f"knee {side}: expected ({NUM_LANDMARKS}, 2) points, got {pts.shape}")
        checked[side] = pts
    display, (h, w) = _to_display(image, max_side_px)
    dh, dw = display.shape
    sx, sy = dw / w, dh / h  # radiograph pixel centres → picture pixel centres

    def at(pts: np.ndarray) -> list[tuple[float, float]]:
        return [((x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5) for x, y in pts]

    size = max(dh, dw)
    marker = max(2.0, 3.5 * size / 1000)  # radius in picture pixels
    font = ImageFont.load_default(size=max(8, round(10.0 * size / 1000)))
    medium = ImageFont.load_default(size=max(10, round(14.0 * size / 1000)))
    big = ImageFont.load_default(size=max(12, round(20.0 * size / 1000)))
    picture = Image.fromarray(np.rint(display * 255).astype(np.uint8), mode="L").convert("RGBA")
    layer = Image.new("RGBA", picture.size, (0, 0, 0, 0))  # lines and boxes are half transparent
    draw, over = ImageDraw.Draw(picture), ImageDraw.Draw(layer)
    yellow = (255, 255, 0, 255)
    for side, pts in checked.items():
        if pts is None:
            draw.text((dw * (0.25 if side == "R" else 0.75), dh * 0.05), f"{side}: no knee found", fill=yellow,
                      font=big, anchor="mt")
            continue
        for ids, bone in ((TIBIA_IDS, "tibia"), (FEMUR_IDS, "femur")):
            over.line(at(pts[list(ids)]), fill=_rgb(BONE_COLOURS[bone], 0.7), width=max(1, round(size / 1000)))
    picture.alpha_composite(layer)
    draw = ImageDraw.Draw(picture)
    for side, pts in checked.items():
        if pts is None:
            continue
        for ids, bone in ((TIBIA_IDS, "tibia"), (FEMUR_IDS, "femur")):
            colour = _rgb(BONE_COLOURS[bone])
            for i in ids:
                x, y = at(pts[i:i + 1])[0]
                draw.ellipse((x - marker, y - marker, x + marker, y + marker), fill=colour, outline=(0, 0, 0, 255))
                if show_ids:  # tibial ids below their points, femoral above
                    dy = 3.2 * marker * (1 if bone == "tibia" else -1)
                    draw.text((x, y + dy), str(i), fill=colour, font=font, anchor="mm")
        centre = at(pts)
        draw.text((float(np.mean([p[0] for p in centre])), min(p[1] for p in centre) - 0.06 * dh), side,
                  fill=yellow, font=big, anchor="mb", stroke_width=1, stroke_fill=yellow)
    for points in (reference or {}).values():
        if points is not None:
            for x, y in at(np.asarray(points, dtype=np.float64)):
                r = 1.2 * marker
                draw.line((x - r, y - r, x + r, y + r), fill=(255, 255, 255, 255), width=1)
                draw.line((x - r, y + r, x + r, y - r), fill=(255, 255, 255, 255), width=1)
    if title:  # on a dark box: readable on bright borders too
        box = draw.textbbox((0.01 * dw, 0.99 * dh), title, font=medium, anchor="lb")
        layer = Image.new("RGBA", picture.size, (0, 0, 0, 0))
        ImageDraw.Draw(layer).rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0, 153))
        picture.alpha_composite(layer)
        ImageDraw.Draw(picture).text((0.01 * dw, 0.99 * dh), title, fill=(255, 255, 255, 255), font=medium,
                                     anchor="lb")
    rgb = picture.convert("RGB")
    return atomic_write(path, lambda tmp: rgb.save(tmp, format="PNG", compress_level=1))


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
