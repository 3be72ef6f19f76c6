"""Landmark-aware transforms: the image moves, its landmarks follow through the affine.

See :mod:`kneel_monai.transforms.points` for the conventions. Names load on first use
(:mod:`kneel_monai.lazy`): the inference path's :mod:`.functional` and :mod:`.points` come without
MONAI; the transform classes (MONAI ``Transform``/``MapTransform``) import it when first named.
"""

from ..lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "array": ["CropRoi", "ResampleToSpacing", "SplitHalves", "roi_size_px"],
    "augment": ["RandCutoutd", "RandKneelIntensityd", "RandLandmarkWarpd", "RandTargetJitterd", "warp_image"],
    "dictionary": ["CropRoid", "FollowAffined", "RandFlipLandmarksd", "RecordAffined", "ResampleToSpacingd",
                   "SplitHalvesd"],
    "intensity": ["INTENSITY_REGIONS", "LocalContrast", "LocalContrastd", "PercentileNormalise",
                  "PercentileNormalised"],
    "mixup": ["MixupBatch", "mixup_loss"],
    "points": ["affine_of", "index_to_xy", "points_between", "points_to_mm", "transform_points", "xy_to_index"],
}, globals())
