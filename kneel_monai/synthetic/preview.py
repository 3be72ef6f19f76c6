"""Pictures of synthetic radiographs: landmark overlays, a contact sheet, a knee close-up.

``python -m kneel_monai.synthetic.preview OUT_DIR`` regenerates the documentation's pictures
(``synthetic_contact_sheet.png`` and ``synthetic_knee_closeup.png``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..landmarks import BONE_COLOURS, SIDES, bone_of
from .generate import SyntheticRadiograph, generate_radiograph

__all__ = ["to_rgb", "draw_landmarks", "contact_sheet", "knee_closeup", "write_doc_pictures"]


def _colour(i: int) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in BONE_COLOURS[bone_of(i)])


def to_rgb(image: np.ndarray, size: tuple[int, int] | None = None) -> Image.Image:
    """[0, 1] display image → RGB PIL image, optionally resized to ``size`` = (width, height)."""
    im = Image.fromarray(np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    return im.resize(size, Image.LANCZOS) if size else im


def draw_landmarks(im: Image.Image, points_px: np.ndarray, scale: float = 1.0, offset=(0.0, 0.0),
                   radius: float = 3.0, labels: bool = False) -> None:
    """Draw 16 landmarks (tibia red, femur green) given in source pixels; ``im`` = source·scale − offset."""
    d = ImageDraw.Draw(im)
    for i, (x, y) in enumerate(np.asarray(points_px, dtype=np.float64)):
        cx, cy = x * scale - offset[0], y * scale - offset[1]
        c = _colour(i)
        d.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=c, width=max(1, int(radius / 2.5)))
        if labels:
            dy = -3.2 * radius if i >= 9 else 1.2 * radius
            d.text((cx - radius, cy + dy), str(i), fill=c)


def contact_sheet(samples: list[SyntheticRadiograph], path: str | os.PathLike, *, columns: int = 3,
                  tile_width: int = 520, overlay: tuple[int, ...] = (0, 1)) -> Path:
    """Downscaled radiographs in a grid (landmarks drawn on the tiles whose index is in ``overlay``)."""
    tiles = []
    for k, s in enumerate(samples):
        H, W = s.image.shape
        # equal mm per tile pixel would shrink small fields; scale each to the tile width instead
        scale = tile_width / W
        tile = to_rgb(s.image, (tile_width, int(round(H * scale))))
        if k in overlay:
            for side in SIDES:
                if s.knees.get(side) is not None:
                    draw_landmarks(tile, s.knees[side]["landmarks_px"], scale=scale, radius=1.6)
        label = ", ".join(f"{side}: KL{s.knees[side]['kl']}" if s.knees.get(side) else f"{side}: absent"
                          for side in SIDES)
        ImageDraw.Draw(tile).text((6, tile.height - 16),
                                  f"seed {s.seed} | {H}x{W} @ {s.pixel_spacing_mm[0]:.3g} mm | {label}",
                                  fill=(255, 200, 0))
        tiles.append(tile)
    rows = (len(tiles) + columns - 1) // columns
    tile_h = max(t.height for t in tiles)
    sheet = Image.new("RGB", (columns * tile_width + (columns - 1) * 4, rows * tile_h + (rows - 1) * 4), (40, 40, 40))
    for k, t in enumerate(tiles):
        sheet.paste(t, ((k % columns) * (tile_width + 4), (k // columns) * (tile_h + 4)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path


def knee_closeup(sample: SyntheticRadiograph, side: str, path: str | os.PathLike, *, field_mm: float = 100.0,
                 out_px: int = 760) -> Path:
    """A ``field_mm`` square around one knee's landmark 4 with its 16 numbered landmarks."""
    knee = sample.knees[side]
    if knee is None:
        raise ValueError(f"knee {side} is absent in this radiograph")
    pts = knee["landmarks_px"]
    sp = sample.pixel_spacing_mm
    cx, cy = pts[4]
    hw, hh = field_mm / 2 / sp[1], field_mm / 2 / sp[0]
    x0, y0 = int(round(cx - hw)), int(round(cy - hh))
    x1, y1 = int(round(cx + hw)), int(round(cy + hh))
    crop = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
    H, W = sample.image.shape
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, H), min(x1, W)
    crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = sample.image[sy0:sy1, sx0:sx1]
    scale = out_px / crop.shape[1]
    im = to_rgb(crop, (out_px, int(round(crop.shape[0] * scale))))
    draw_landmarks(im, pts, scale=scale, offset=(x0 * scale, y0 * scale), radius=4.5, labels=True)
    ImageDraw.Draw(im).text((8, 8), f"{'right' if side == 'R' else 'left'} knee, KL{knee['kl']}, "
                            f"{field_mm:.0f} mm field, seed {sample.seed}", fill=(255, 200, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, optimize=True)
    return path


def write_doc_pictures(out_dir: str | os.PathLike) -> list[Path]:
    """The documentation's pictures (deterministic)."""
    out = Path(out_dir)
    samples = [
        generate_radiograph(1, kl={"R": 0, "L": 1}),
        generate_radiograph(2, kl=4),
        generate_radiograph(3),
        generate_radiograph(4, knees=("R",), kl=2),
        generate_radiograph(5, crop="tight", kl=3),
        generate_radiograph(6),
    ]
    sheet = contact_sheet(samples, out / "synthetic_contact_sheet.png")
    close = knee_closeup(generate_radiograph(2, kl=4), "R", out / "synthetic_knee_closeup.png")
    return [sheet, close]


if __name__ == "__main__":  # pragma: no cover
    import sys

    for p in write_doc_pictures(sys.argv[1] if len(sys.argv) > 1 else "docs/images"):
        print(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB)")
