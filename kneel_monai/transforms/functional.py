"""The transforms' pixel and affine arithmetic, as functions, without MONAI.

Like MONAI's own ``transforms/*/functional.py``: the array transforms (:mod:`.array`,
:mod:`.intensity`, MONAI ``Transform`` classes used by the training and bundle chains) call these,
and so does the inference path directly, so that ``kneel predict`` need not import MONAI
(:mod:`kneel_monai.image`). Each takes an image with ``.as_tensor()``, ``.affine`` and ``.meta``
(a ``MetaTensor`` or an :class:`~kneel_monai.image.AffineImage`) and returns one of the same kind
whose affine maps its pixel indices to the same millimetres as the input's, so landmarks follow
(:mod:`.points`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..image import carries_affine, image_like
from ..model_io import INTENSITY_REGIONS
from .points import affine_of, transform_points

__all__ = ["pixel_spacing", "roi_size_px", "resample_to_spacing", "roi_affine", "crop_roi",
           "split_halves", "pad_and_centre_crop", "percentile_normalise", "local_contrast", "percentile_limits",
           "roi_percentile_limits", "check_percentiles", "local_contrast_settings", "check_clahe"]


def _checked(img: Any, name: str) -> Any:
    if not carries_affine(img):
        raise ValueError(f"{name} needs a MetaTensor (C, H, W) carrying its affine, got {type(img).__name__}")
    if img.ndim != 3:
        raise ValueError(f"{name} expects a (C, H, W) image, got shape {tuple(img.shape)}")
    return img


def pixel_spacing(affine: torch.Tensor) -> tuple[float, float]:
    """(row, col) spacing in mm: the lengths of the affine's index columns."""
    affine = torch.as_tensor(affine)
    return float(torch.linalg.norm(affine[:2, 0])), float(torch.linalg.norm(affine[:2, 1]))


def roi_size_px(size_mm: float, spacing_mm: float) -> int:
    """Side of a square ROI in pixels: ``round(size_mm / spacing_mm)`` (140 mm at 0.3 mm → 467)."""
    return int(round(size_mm / spacing_mm))


def resample_to_spacing(img: Any, spacing_mm: float, antialias: bool = True) -> Any:
    """The whole image resampled to ``spacing_mm`` (bilinear; anti-aliased when shrinking); see
    :class:`~kneel_monai.transforms.ResampleToSpacing`."""
    img = _checked(img, "ResampleToSpacing")
    affine = affine_of(img)
    (h, w), (sr, sc) = img.shape[-2:], pixel_spacing(affine)
    out_h, out_w = max(1, round(h * sr / spacing_mm)), max(1, round(w * sc / spacing_mm))
    scale_r, scale_c = h / out_h, w / out_w
    data = F.interpolate(img.as_tensor()[None].float(), size=(out_h, out_w), mode="bilinear",
                         align_corners=False, antialias=antialias and (scale_r > 1 or scale_c > 1))[0]
    # output index i samples input position (i + 0.5) * scale - 0.5
    step = torch.tensor([[scale_r, 0, 0.5 * scale_r - 0.5], [0, scale_c, 0.5 * scale_c - 0.5], [0, 0, 1]],
                        dtype=torch.float64)
    return image_like(img, data, affine @ step)


def roi_affine(src_affine: torch.Tensor, centre_xy: Sequence[float], mirror: bool, size_px: int,
               spacing_mm: float) -> torch.Tensor:
    """Affine of a square ROI grid of ``size_px`` at ``spacing_mm`` centred on ``centre_xy``: index → the
    source image's millimetres (columns right-to-left when ``mirror``)."""
    centre = torch.as_tensor([float(centre_xy[0]), float(centre_xy[1])], dtype=torch.float64)
    if not torch.isfinite(centre).all():
        raise ValueError(f"ROI centre must be finite, got {tuple(centre_xy)}")
    centre_mm = transform_points(centre[None], src_affine)[0]  # (x_mm, y_mm)
    s, half = spacing_mm, (size_px - 1) / 2
    sign = -1.0 if mirror else 1.0
    return torch.tensor(
        [[s, 0, float(centre_mm[1]) - s * half], [0, sign * s, float(centre_mm[0]) - sign * s * half], [0, 0, 1]],
        dtype=torch.float64,
    )


def crop_roi(img: Any, centre_xy: Sequence[float], mirror: bool, size_px: int, spacing_mm: float,
             mode: str = "bilinear") -> Any:
    """The square ROI of :class:`~kneel_monai.transforms.CropRoi`: one bilinear resampling crops, mirrors
    and changes the spacing; outside the image is zero; ``meta["roi_mirrored"]`` records the mirror."""
    img = _checked(img, "CropRoi")
    src_affine = affine_of(img)
    dst_affine = roi_affine(src_affine, centre_xy, mirror, size_px, spacing_mm)
    n = size_px
    h, w = img.shape[-2:]
    # source (row, col) of every output pixel, then grid_sample's [-1, 1] (align_corners=True)
    rows, cols = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64),
                                indexing="ij")
    index = torch.stack([rows, cols, torch.ones_like(rows)], dim=-1).reshape(-1, 3).T
    src = (torch.linalg.inv(src_affine) @ dst_affine @ index)[:2].T.reshape(n, n, 2)
    grid = torch.stack([2 * src[..., 1] / max(w - 1, 1) - 1, 2 * src[..., 0] / max(h - 1, 1) - 1], dim=-1)
    data = F.grid_sample(img.as_tensor()[None].float(), grid[None].float(), mode=mode,
                         padding_mode="zeros", align_corners=True)[0]
    out = image_like(img, data, dst_affine)
    out.meta["roi_mirrored"] = bool(mirror)
    return out


def split_halves(img: Any) -> tuple[Any, Any]:
    """``(left_half, right_half)`` of the image, no resampling; each half's affine is shifted by its first
    column (see :class:`~kneel_monai.transforms.SplitHalves`)."""
    img = _checked(img, "SplitHalves")
    affine = affine_of(img)
    w = img.shape[-1]
    if w < 2:
        raise ValueError(f"cannot split an image {w} pixel wide into halves")
    mid = w // 2
    shift = torch.eye(3, dtype=torch.float64)
    shift[1, 2] = mid
    data = img.as_tensor()
    return image_like(img, data[..., :mid].clone(), affine), image_like(img, data[..., mid:].clone(), affine @ shift)


def pad_and_centre_crop(img: Any, pad_size: int, crop_size: int) -> Any:
    """Zero-pad symmetrically to at least ``pad_size`` square, then cut the centre ``crop_size`` square.

    MONAI's ``SpatialPad(pad_size)`` then ``CenterSpatialCrop(crop_size)`` — the network-input step of
    the training chains (:mod:`kneel_monai.data.pipelines`) — computed the same way (pad
    ``width // 2`` before; crop from ``centre − crop // 2`` with the centre at ``size // 2``), which
    ``tests/test_transforms.py`` checks pixel for pixel and affine for affine.
    """
    img = _checked(img, "pad_and_centre_crop")
    data, affine = img.as_tensor(), affine_of(img)
    size = data.shape[-2:]
    before = [max(pad_size - s, 0) // 2 for s in size]
    after = [max(pad_size - s, 0) - b for s, b in zip(size, before)]
    if any(before) or any(after):
        data = F.pad(data, (before[1], after[1], before[0], after[0]))
    start = [max(s // 2 - crop_size // 2, 0) for s in data.shape[-2:]]
    data = data[..., start[0]:start[0] + crop_size, start[1]:start[1] + crop_size]
    shift = torch.eye(3, dtype=torch.float64)
    shift[0, 2], shift[1, 2] = start[0] - before[0], start[1] - before[1]
    return image_like(img, data, affine @ shift)


def percentile_limits(intensity: Mapping | None) -> tuple[float, float]:
    """The ``(lower, upper)`` percentiles a model's ``preprocessing["intensity"]`` scales to [0, 1] (5/99 when
    absent), checked; a converted release model's mean/std step follows in ``KneelModel.network_input``."""
    spec = dict(intensity or {})
    if spec.get("kind", "percentile") not in ("percentile", "release_mean_std"):
        raise ValueError(f"unknown intensity kind {spec.get('kind')!r}; expected 'percentile' or "
                         "'release_mean_std'")
    if spec.get("region", "image") not in INTENSITY_REGIONS:
        raise ValueError(f"unknown intensity region {spec.get('region')!r}; expected one of {INTENSITY_REGIONS}")
    return check_percentiles(float(spec.get("lower", 5.0)), float(spec.get("upper", 99.0)))


def check_percentiles(lower: float, upper: float) -> tuple[float, float]:
    """``(lower, upper)`` when ``0 <= lower < upper <= 100``; a ``ValueError`` otherwise."""
    if not 0 <= lower < upper <= 100:
        raise ValueError(f"need 0 <= lower < upper <= 100, got {lower}, {upper}")
    return lower, upper


def roi_percentile_limits(intensity: Mapping | None) -> tuple[float, float] | None:
    """The percentiles of the second scaling, of each knee ROI to its own, when ``intensity["region"]`` is
    ``"roi"``; ``None`` when the radiograph's scaling is the only one (``"image"``, the default)."""
    limits = percentile_limits(intensity)
    return limits if (intensity or {}).get("region", "image") == "roi" else None


def percentile_normalise(img: Any, lower: float = 5.0, upper: float = 99.0, constant_ok: bool = False) -> Any:
    """Clip to the ``lower``–``upper`` percentiles and scale to [0, 1] (see
    :class:`~kneel_monai.transforms.PercentileNormalise`); a plain tensor gives a plain tensor."""
    has_meta = hasattr(img, "as_tensor")
    x = img.as_tensor() if has_meta else torch.as_tensor(img)
    flat = x.float().flatten()
    if flat.numel() > 1_000_000:  # quantiles of a regular subsample: same answer to <0.1 %, far faster
        flat = flat[:: flat.numel() // 500_000]
    # numpy's percentile selects (O(n)) where torch.quantile sorts: 4x faster on a knee ROI, same definition
    lo, hi = np.percentile(flat.cpu().numpy(), [lower, upper]).tolist()
    if hi <= lo:
        lo, hi = float(x.min()), float(x.max())
    if hi <= lo and constant_ok:
        hi = lo + 1.0  # every pixel maps to 0
    if hi <= lo:
        name = img.meta.get("filename_or_obj", "image") if has_meta else "image"
        raise ValueError(f"{name}: constant image (every pixel is {lo}); nothing to normalise")
    out = ((x.float() - lo) / (hi - lo)).clamp_(0, 1)
    return image_like(img, out) if has_meta else out


def local_contrast_settings(spec: Mapping | None) -> dict[str, float] | None:
    """``{"tile_mm", "clip_limit"}`` of a model's ``preprocessing["local_contrast"]`` (``None``: none), checked."""
    if not spec:
        return None
    if spec.get("kind") != "clahe":
        raise ValueError(f"unknown local contrast kind {spec.get('kind')!r}; expected 'clahe'")
    tile_mm, clip_limit = check_clahe(float(spec.get("tile_mm", 16.0)), float(spec.get("clip_limit", 0.01)))
    return {"tile_mm": tile_mm, "clip_limit": clip_limit}


def check_clahe(tile_mm: float, clip_limit: float) -> tuple[float, float]:
    """``(tile_mm, clip_limit)`` when ``tile_mm > 0`` and ``0 < clip_limit <= 1``; a ``ValueError`` otherwise."""
    if tile_mm <= 0 or not 0 < clip_limit <= 1:
        raise ValueError(f"need tile_mm > 0 and 0 < clip_limit <= 1, got {tile_mm}, {clip_limit}")
    return tile_mm, clip_limit


def local_contrast(img: Any, tile_mm: float = 16.0, clip_limit: float = 0.01, bins: int = 256) -> Any:
    """CLAHE with ``tile_mm`` tiles (see :class:`~kneel_monai.transforms.LocalContrast`); input and output in
    [0, 1], the affine kept; a plain tensor is taken as 1 mm pixels."""
    from skimage.exposure import equalize_adapthist

    has_meta = hasattr(img, "as_tensor")
    x = img.as_tensor() if has_meta else torch.as_tensor(img)
    spacing = pixel_spacing(torch.as_tensor(img.affine).double())[0] if has_meta else 1.0
    tile = max(8, int(round(tile_mm / spacing)))
    arr = x.detach().float().cpu().numpy()
    planes = arr.reshape(-1, *arr.shape[-2:])
    out = np.stack([equalize_adapthist(np.clip(c, 0, 1).astype(np.float64), kernel_size=tile,
                                       clip_limit=clip_limit, nbins=bins) for c in planes])
    out_t = torch.from_numpy(out.reshape(arr.shape).astype(np.float32))
    return image_like(img, out_t) if has_meta else out_t
