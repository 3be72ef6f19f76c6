"""Real knees composited into synthetic radiographs, for training stage 1 on real knee appearance.

Stage 1 sees a whole leg at 4 mm pixels. Learnt on synthetic films only, it finds the synthetic
joint's dark, sharp joint line and lands beside real knees (docs/real_knees.md). Real annotated
*full* films are not available; real annotated knee *crops* are (``kneel build-oai-crops``). So each
knee of a synthetic film is replaced by a real crop: the crop's registered landmarks are fitted onto
the synthetic knee's (a similarity whose scale is fixed by the two pixel spacings), the crop is
resampled into the film, matched to the film's grey levels and blended in with a feathered edge.
The film keeps its synthetic legs, field and collimation; the knee's ground truth becomes the crop's
landmarks in film pixels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..landmarks import SIDES
from ..similarity import apply_similarity, fit_similarity, similarity_scale
from .generate import SyntheticRadiograph

__all__ = ["RealKnee", "composite_real_knees", "read_real_knees", "single_knee_fields"]


@dataclass(frozen=True)
class RealKnee:
    """A real knee crop with its registered annotation: ``image`` (H, W) in [0, 1], ``landmarks_px``
    (16, 2) (x, y) crop pixels with anatomical ids, ``spacing_mm`` (square pixels), ``side`` as
    the crop shows it (a left knee is not mirrored)."""

    key: str
    image: np.ndarray
    landmarks_px: np.ndarray
    spacing_mm: float
    side: str


def read_real_knees(datalist: str | os.PathLike, folds: Sequence[int] | None = None,
                    source: str = "oai_crops") -> list[RealKnee]:
    """The real knees of a landmark datalist (``kneel build-oai-crops``' ``landmark_datalist.json``), of
    ``folds`` only when given (e.g. the training part, so that validation knees stay unseen)."""
    from PIL import Image

    path = Path(datalist)
    items = json.loads(path.read_text(encoding="utf-8"))["items"]
    out = []
    for item in items:
        if item.get("source") != source or (folds is not None and item.get("fold") not in folds):
            continue
        image_path = Path(item["image"])
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        with Image.open(image_path) as im:
            if im.mode not in ("L", "I;16", "I"):
                raise ValueError(f"{image_path}: expected a grey crop, got mode {im.mode}")
            arr = np.asarray(im, dtype=np.float32)
        top = 255.0 if arr.max() <= 255 else 65535.0
        spacing = item["spacing_mm"]
        sy, sx = (spacing, spacing) if np.isscalar(spacing) else spacing
        if abs(sy - sx) > 1e-6 * max(sy, sx):
            raise ValueError(f"{image_path}: non-square pixels {spacing} are not supported")
        out.append(RealKnee(str(item.get("key", image_path.stem)), arr / top,
                            np.asarray(item["landmarks_px"], dtype=np.float64), float(sx), str(item["side"])))
    if not out:
        raise ValueError(f"{path}: no {source!r} knee{'' if folds is None else f' in folds {list(folds)}'}")
    return out


def _fit_at_scale(src: np.ndarray, dst: np.ndarray, scale: float) -> np.ndarray:
    """2×3 similarity ``src → dst`` with the given ``scale``: the least-squares fit's rotation (it does not depend
    on the scale; no reflection, which would put the fibula on the wrong side), centroid onto centroid."""
    free = fit_similarity(src, dst)
    linear = scale * free[:, :2] / similarity_scale(free)
    return np.hstack([linear, (dst.mean(0) - linear @ src.mean(0))[:, None]])


def _feather(shape: tuple[int, int], border: float) -> np.ndarray:
    """A (H, W) weight: 1 inside, a cosine ramp to 0 over ``border`` of each side at the edges."""
    def ramp(n: int) -> np.ndarray:
        d = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5) / max(border * n, 1e-6)
        return 0.5 - 0.5 * np.cos(np.pi * np.clip(d, 0.0, 1.0))

    return np.outer(ramp(shape[0]), ramp(shape[1]))


def _paste(film: np.ndarray, spacing_mm: float, target_px: np.ndarray, knee: RealKnee, border: float,
           contrast: float) -> np.ndarray:
    """``film`` with ``knee`` fitted onto the landmarks ``target_px``, in place; returns the knee's landmarks in
    film pixels."""
    from scipy.ndimage import map_coordinates

    to_film = _fit_at_scale(knee.landmarks_px, target_px, knee.spacing_mm / spacing_mm)
    h, w = knee.image.shape
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]])
    footprint = apply_similarity(to_film, corners)
    x0, y0 = np.maximum(np.floor(footprint.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(footprint.max(0)).astype(int) + 1, (film.shape[1], film.shape[0]))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"knee {knee.key} falls outside the film")
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    # film pixel → crop pixel: the inverse of the linear part, after the shift
    src = (np.stack([xx.ravel(), yy.ravel()], 1) - to_film[:, 2]) @ np.linalg.inv(to_film[:, :2]).T
    coords = [src[:, 1].reshape(xx.shape), src[:, 0].reshape(xx.shape)]
    crop = map_coordinates(knee.image, coords, order=1, mode="nearest")
    weight = map_coordinates(_feather((h, w), border), coords, order=1, mode="constant", cval=0.0)
    region = film[y0:y1, x0:x1]
    inside = weight > 0.5
    # the crop's grey levels onto the film's under the same footprint (both percentiles 2 and 98)
    f_lo, f_hi = np.percentile(region[inside], (2, 98))
    c_lo, c_hi = np.percentile(crop[inside], (2, 98))
    mid, half = (f_lo + f_hi) / 2, contrast * (f_hi - f_lo) / 2
    mapped = mid + (crop - (c_lo + c_hi) / 2) * (2 * half / max(c_hi - c_lo, 1e-6))
    film[y0:y1, x0:x1] = np.clip((1 - weight) * region + weight * mapped, 0.0, 1.0)
    return apply_similarity(to_film, knee.landmarks_px)


def composite_real_knees(sample: SyntheticRadiograph, knees: Sequence[RealKnee], rng: np.random.Generator,
                         border_range: tuple[float, float] = (0.2, 0.4),
                         contrast_range: tuple[float, float] = (0.8, 1.2)) -> SyntheticRadiograph:
    """``sample`` with each of its knees replaced by a real knee of the same side drawn from ``knees``.

    ``border_range``: the feathered edge, a fraction of the crop's side (drawn per knee), so that no
    sharp crop edge marks where the knee is; ``contrast_range``: the crop's contrast against the film's
    own under it (drawn per knee). The ground truth becomes the real knees' landmarks; ``params`` record
    which crop went where.
    """
    if sample.pixel_spacing_mm[0] != sample.pixel_spacing_mm[1]:
        raise ValueError(f"non-square pixels {sample.pixel_spacing_mm} are not supported")
    by_side: Mapping[str, list[RealKnee]] = {s: [k for k in knees if k.side == s] for s in SIDES}
    film = np.array(sample.image, dtype=np.float32, copy=True)
    truth, used = {}, {}
    for side, knee in sample.knees.items():
        if knee is None:
            truth[side] = None
            continue
        if not by_side[side]:
            raise ValueError(f"no real {side} knee to composite")
        real = by_side[side][int(rng.integers(len(by_side[side])))]
        pts = _paste(film, float(sample.pixel_spacing_mm[0]), np.asarray(knee["landmarks_px"], dtype=np.float64),
                     real, float(rng.uniform(*border_range)), float(rng.uniform(*contrast_range)))
        truth[side], used[side] = {**knee, "landmarks_px": pts}, real.key
    return replace(sample, image=film, knees=truth, params={**sample.params, "real_knees": used})


def single_knee_fields(sample: SyntheticRadiograph, rng: np.random.Generator,
                       width_mm: tuple[float, float] = (200.0, 270.0), height_mm: tuple[float, float] = (240.0, 300.0),
                       jitter_mm: float = 25.0) -> SyntheticRadiograph:
    """Two single-knee fields cut from a bilateral ``sample``, side by side: the right knee's field on the
    left, the left knee's on the right, each about centred on its knee (± ``jitter_mm``).

    Stage 1 reads an image in halves, and a single-knee radiograph as one input; the halves of this
    image are two single-knee radiographs, so stage 1 learns centred knees with the same training chain.
    """
    if any(sample.knees.get(s) is None for s in SIDES):
        raise ValueError("single_knee_fields needs a bilateral sample")
    mm = float(sample.pixel_spacing_mm[1])
    h, w = sample.image.shape
    fw = min(int(round(rng.uniform(*width_mm) / mm)), w // 2)
    fh = min(int(round(rng.uniform(*height_mm) / mm)), h)
    fields, knees = [], {}
    for i, side in enumerate(SIDES):
        pts = np.asarray(sample.knees[side]["landmarks_px"], dtype=np.float64)
        cx, cy = pts.mean(0) + rng.uniform(-jitter_mm, jitter_mm, 2) / mm
        x0 = int(np.clip(round(cx - fw / 2), 0, w - fw))
        y0 = int(np.clip(round(cy - fh / 2), 0, h - fh))
        fields.append(sample.image[y0:y0 + fh, x0:x0 + fw])
        knees[side] = {**sample.knees[side], "landmarks_px": pts - [x0 - i * fw, y0]}
    image = np.concatenate(fields, axis=1)
    params = {**sample.params, "layout": "single_knee_fields", "image_size": list(image.shape)}
    return replace(sample, image=image, knees=knees, params=params)
