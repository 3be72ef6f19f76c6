"""Landmark-aware transforms: the image moves, its landmarks follow through the affine.

See :mod:`kneel_monai.transforms.points` for the conventions.
"""

from .array import CropRoi, ResampleToSpacing, SplitHalves, roi_size_px
from .augment import RandCutoutd, RandKneelIntensityd, RandLandmarkWarpd, RandTargetJitterd, warp_image
from .dictionary import (
    CropRoid,
    FollowAffined,
    RandFlipLandmarksd,
    RecordAffined,
    ResampleToSpacingd,
    SplitHalvesd,
)
from .intensity import INTENSITY_REGIONS, LocalContrast, LocalContrastd, PercentileNormalise, PercentileNormalised
from .mixup import MixupBatch, mixup_loss
from .points import affine_of, index_to_xy, points_between, points_to_mm, transform_points, xy_to_index

__all__ = [
    "INTENSITY_REGIONS",
    "CropRoi",
    "LocalContrast",
    "LocalContrastd",
    "PercentileNormalise",
    "PercentileNormalised",
    "RandCutoutd",
    "RandKneelIntensityd",
    "RandLandmarkWarpd",
    "RandTargetJitterd",
    "warp_image",
    "MixupBatch",
    "mixup_loss",
    "ResampleToSpacing",
    "SplitHalves",
    "roi_size_px",
    "CropRoid",
    "FollowAffined",
    "RecordAffined",
    "RandFlipLandmarksd",
    "ResampleToSpacingd",
    "SplitHalvesd",
    "affine_of",
    "index_to_xy",
    "points_between",
    "points_to_mm",
    "transform_points",
    "xy_to_index",
]
