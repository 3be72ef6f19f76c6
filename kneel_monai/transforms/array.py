"""Array transforms that move pixels and keep the ``MetaTensor`` affine exact, so landmarks can follow.

Each returns a new ``MetaTensor`` ``(C, H', W')`` whose affine maps its pixel indices to the same
millimetres as the input's (see :mod:`kneel_monai.transforms.points`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import Transform

from .points import affine_of, transform_points

__all__ = ["ResampleToSpacing", "CropRoi", "SplitHalves", "roi_size_px"]


def _as_metatensor(img, name: str) -> MetaTensor:
    if not isinstance(img, MetaTensor):
        raise ValueError(f"{name} needs a MetaTensor (C, H, W) carrying its affine, got {type(img).__name__}")
    if img.ndim != 3:
        raise ValueError(f"{name} expects a (C, H, W) image, got shape {tuple(img.shape)}")
    return img


def _with_affine(data: torch.Tensor, like: MetaTensor, affine: torch.Tensor) -> MetaTensor:
    meta = {k: v for k, v in like.meta.items() if k != "affine"}  # the new affine replaces the old
    return MetaTensor(data, affine=affine.to(torch.float64), meta=meta)


def pixel_spacing(affine: torch.Tensor) -> tuple[float, float]:
    """(row, col) spacing in mm: the lengths of the affine's index columns."""
    return float(torch.linalg.norm(affine[:2, 0])), float(torch.linalg.norm(affine[:2, 1]))


class ResampleToSpacing(Transform):
    """Resample a whole radiograph to ``spacing_mm`` (bilinear; anti-aliased when shrinking).

    The output size is ``round(size · spacing_in / spacing_mm)`` per axis, so the true output
    spacing is ``spacing_in · size_in / size_out`` (within half a pixel over the image of
    ``spacing_mm``); the affine records the true value. Pixel centres follow the half-pixel
    convention of ``torch.nn.functional.interpolate(align_corners=False)``.
    """

    def __init__(self, spacing_mm: float, antialias: bool = True) -> None:
        if not spacing_mm > 0:
            raise ValueError(f"spacing_mm must be > 0, got {spacing_mm}")
        self.spacing_mm = float(spacing_mm)
        self.antialias = antialias

    def __call__(self, img: MetaTensor) -> MetaTensor:
        img = _as_metatensor(img, type(self).__name__)
        affine = affine_of(img)
        (h, w), (sr, sc) = img.shape[-2:], pixel_spacing(affine)
        out_h, out_w = max(1, round(h * sr / self.spacing_mm)), max(1, round(w * sc / self.spacing_mm))
        scale_r, scale_c = h / out_h, w / out_w
        data = F.interpolate(img.as_tensor()[None].float(), size=(out_h, out_w), mode="bilinear",
                             align_corners=False, antialias=self.antialias and (scale_r > 1 or scale_c > 1))[0]
        # output index i samples input position (i + 0.5) * scale - 0.5
        step = torch.tensor([[scale_r, 0, 0.5 * scale_r - 0.5], [0, scale_c, 0.5 * scale_c - 0.5], [0, 0, 1]],
                            dtype=torch.float64)
        return _with_affine(data, img, affine @ step)


def roi_size_px(size_mm: float, spacing_mm: float) -> int:
    """Side of a square ROI in pixels: ``round(size_mm / spacing_mm)`` (140 mm at 0.3 mm → 467)."""
    return int(round(size_mm / spacing_mm))


class CropRoi(Transform):
    """Cut a square ROI of ``size_mm`` centred exactly on a point, optionally mirrored, at ``spacing_mm``.

    One bilinear resampling does the crop, the mirror and the spacing change together: the
    output pixel grid is ``n × n`` (``n = round(size_mm / spacing_mm)``) with the point at its
    centre ``((n − 1)/2, (n − 1)/2)``; outside the image is zero. With ``mirror=True`` columns run
    right-to-left (a left knee then looks like a right knee); the affine records it, so points
    mapped through the affines come back un-mirrored.

    Call: ``crop(img, centre_xy, mirror=False)`` with ``centre_xy`` the ``(x, y)`` pixel position.
    """

    def __init__(self, size_mm: float = 140.0, spacing_mm: float = 0.3, mode: str = "bilinear") -> None:
        if not (size_mm > 0 and spacing_mm > 0):
            raise ValueError(f"size_mm and spacing_mm must be > 0, got {size_mm}, {spacing_mm}")
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
        self.size_mm, self.spacing_mm, self.mode = float(size_mm), float(spacing_mm), mode
        self.size_px = roi_size_px(size_mm, spacing_mm)

    def roi_affine(self, src_affine: torch.Tensor, centre_xy: Sequence[float], mirror: bool) -> torch.Tensor:
        """Affine of the ROI grid: index → the source image's millimetres."""
        centre = torch.as_tensor([float(centre_xy[0]), float(centre_xy[1])], dtype=torch.float64)
        if not torch.isfinite(centre).all():
            raise ValueError(f"ROI centre must be finite, got {tuple(centre_xy)}")
        centre_mm = transform_points(centre[None], src_affine)[0]  # (x_mm, y_mm)
        s, half = self.spacing_mm, (self.size_px - 1) / 2
        sign = -1.0 if mirror else 1.0
        return torch.tensor(
            [[s, 0, float(centre_mm[1]) - s * half], [0, sign * s, float(centre_mm[0]) - sign * s * half], [0, 0, 1]],
            dtype=torch.float64,
        )

    def __call__(self, img: MetaTensor, centre_xy: Sequence[float], mirror: bool = False) -> MetaTensor:
        img = _as_metatensor(img, type(self).__name__)
        src_affine = affine_of(img)
        dst_affine = self.roi_affine(src_affine, centre_xy, mirror)
        n = self.size_px
        h, w = img.shape[-2:]
        # source (row, col) of every output pixel, then grid_sample's [-1, 1] (align_corners=True)
        rows, cols = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64),
                                    indexing="ij")
        index = torch.stack([rows, cols, torch.ones_like(rows)], dim=-1).reshape(-1, 3).T
        src = (torch.linalg.inv(src_affine) @ dst_affine @ index)[:2].T.reshape(n, n, 2)
        grid = torch.stack([2 * src[..., 1] / max(w - 1, 1) - 1, 2 * src[..., 0] / max(h - 1, 1) - 1], dim=-1)
        data = F.grid_sample(img.as_tensor()[None].float(), grid[None].float(), mode=self.mode,
                             padding_mode="zeros", align_corners=True)[0]
        out = _with_affine(data, img, dst_affine)
        out.meta["roi_mirrored"] = bool(mirror)
        return out


class SplitHalves(Transform):
    """Split a radiograph into its left and right image halves (no resampling, no mirroring).

    Returns ``(left_half, right_half)``: by radiological convention the image's left half holds
    the patient's **right** knee. Each half's affine is the input's shifted by its first column,
    so points follow exactly.
    """

    def __call__(self, img: MetaTensor) -> tuple[MetaTensor, MetaTensor]:
        img = _as_metatensor(img, type(self).__name__)
        affine = affine_of(img)
        w = img.shape[-1]
        if w < 2:
            raise ValueError(f"cannot split an image {w} pixel wide into halves")
        mid = w // 2
        shift = torch.eye(3, dtype=torch.float64)
        shift[1, 2] = mid
        left = _with_affine(img.as_tensor()[..., :mid].clone(), img, affine)
        right = _with_affine(img.as_tensor()[..., mid:].clone(), img, affine @ shift)
        return left, right
