"""Array transforms that move pixels and keep the ``MetaTensor`` affine exact, so landmarks can follow.

Each returns a new image ``(C, H', W')`` of the input's kind (``MetaTensor``, or the inference path's
:class:`~kneel_monai.image.AffineImage`) whose affine maps its pixel indices to the same millimetres as
the input's (see :mod:`kneel_monai.transforms.points`). The arithmetic is in :mod:`.functional`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.transforms import Transform

from . import functional as KF
from .functional import pixel_spacing, roi_size_px

__all__ = ["ResampleToSpacing", "CropRoi", "SplitHalves", "roi_size_px", "pixel_spacing"]


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

    def __call__(self, img):
        return KF.resample_to_spacing(img, self.spacing_mm, self.antialias)


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
        return KF.roi_affine(src_affine, centre_xy, mirror, self.size_px, self.spacing_mm)

    def __call__(self, img, centre_xy: Sequence[float], mirror: bool = False):
        return KF.crop_roi(img, centre_xy, mirror, self.size_px, self.spacing_mm, self.mode)


class SplitHalves(Transform):
    """Split a radiograph into its left and right image halves (no resampling, no mirroring).

    Returns ``(left_half, right_half)``: by radiological convention the image's left half holds
    the patient's **right** knee. Each half's affine is the input's shifted by its first column,
    so points follow exactly.
    """

    def __call__(self, img):
        return KF.split_halves(img)
