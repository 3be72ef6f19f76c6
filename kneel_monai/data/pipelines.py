"""Transform chains from a datalist item to a network input and target, for both stages.

Both chains: load → normalise (5th–99th percentile → [0, 1]) → stage geometry → (training:
warp, pad 520 / random crop 450, cutout, intensity) or (evaluation: pad 520 / centre crop 450)
→ ``target``: the points as ``(N, 2)`` float32 normalised, pixel-centred coordinates of the
450 × 450 input (``(x + 0.5) / W``), the convention of the project's soft-argmax.

The image's ``affine`` at the end maps network-input pixels to the original radiograph's
millimetres; ``d["image_original_affine"]`` is the radiograph's own, so a prediction ``p``
(pixels of the network input) goes back with
``points_between(p, d["image"].affine, d["image_original_affine"])``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    MapTransform,
    RandSpatialCropd,
    SpatialPadd,
)

from ..io import LoadRadiographd
from ..landmarks import SIDES
from ..transforms import (
    INTENSITY_REGIONS,
    CropRoid,
    FollowAffined,
    LocalContrast,
    LocalContrastd,
    PercentileNormalised,
    RandCutoutd,
    RandKneelIntensityd,
    RandLandmarkWarpd,
    RecordAffined,
    ResampleToSpacingd,
    SplitHalvesd,
)

__all__ = ["PointsFromItemd", "PointsToTargetd", "BatchReadyd", "roi_stage_transforms", "landmark_stage_transforms"]


class PointsFromItemd(MapTransform):
    """Datalist JSON points → ``d["points"]`` float64 arrays (``None`` knees become NaN rows).

    ROI items (``knee_centres_px``) give ``(2, 1, 2)`` (right knee, left knee); landmark items
    (``landmarks_px``) give ``(16, 2)``.
    """

    def __init__(self, out_key: str = "points") -> None:
        super().__init__(["knee_centres_px", "landmarks_px"], allow_missing_keys=True)
        self.out_key = out_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        if "knee_centres_px" in d:
            centres = d["knee_centres_px"]
            d[self.out_key] = np.array([[centres[s] if centres[s] is not None else [np.nan, np.nan]] for s in SIDES],
                                       dtype=np.float64)
        elif "landmarks_px" in d:
            d[self.out_key] = np.asarray(d["landmarks_px"], dtype=np.float64)
        else:
            raise KeyError(f"item has neither 'knee_centres_px' nor 'landmarks_px' (keys: {sorted(d)})")
        return d


class PointsToTargetd(MapTransform):
    """``(N, 2)`` pixel points of the final image → normalised ``(x + 0.5)/W, (y + 0.5)/H`` float32."""

    def __init__(self, point_key: str = "points", image_key: str = "image", target_key: str = "target") -> None:
        super().__init__([point_key])
        self.point_key, self.image_key, self.target_key = point_key, image_key, target_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        h, w = d[self.image_key].shape[-2:]
        pts = torch.as_tensor(np.asarray(d[self.point_key]), dtype=torch.float64)
        d[self.target_key] = ((pts + 0.5) / torch.tensor([w, h], dtype=torch.float64)).float()
        return d


class BatchReadyd(MapTransform):
    """Make a sample collatable: drop the datalist's raw JSON points, give each knee its own KL
    grade (``-1`` when unknown) and drop the per-item spacing (``default_collate`` cannot batch
    ``None`` or a key some items lack)."""

    def __init__(self) -> None:
        super().__init__(["image"])

    def __call__(self, data: Mapping) -> dict:
        d = {k: v for k, v in data.items() if k not in ("knee_centres_px", "landmarks_px")}
        kl = d.get("kl")
        if isinstance(kl, Mapping):
            kl = kl.get(d.get("side"))
        d["kl"] = -1 if kl is None else int(kl)
        # the spacing was used by the reader (the image's affine carries it); items of mixed sources
        # (a crop set with it, DICOMs without) must collate, so neither it nor the crop key travels on
        d.pop("spacing_mm", None)
        d.pop("key", None)
        d.setdefault("source", "")
        return d


def _tail(train: bool, pad: int, crop: int, cutout: float) -> list:
    pts = "points"
    chain = []
    if train:
        chain.append(RandLandmarkWarpd("image", pts, prob=0.7))
    chain.append(FollowAffined(SpatialPadd("image", spatial_size=(pad, pad)), "image", pts))
    cropper = RandSpatialCropd("image", roi_size=(crop, crop), random_size=False) if train else \
        CenterSpatialCropd("image", roi_size=(crop, crop))
    chain.append(FollowAffined(cropper, "image", pts))
    if train:
        if cutout > 0:  # the paper's ablation: cutout 10 % (p 0.5) or none
            chain.append(RandCutoutd("image", size_fraction=cutout, prob=0.5))
        chain.append(RandKneelIntensityd("image"))
    chain += [PointsToTargetd(pts, "image", "target"), BatchReadyd()]
    return chain


def _head(percentiles: tuple[float, float]) -> list:
    return [
        LoadRadiographd("image", spacing_key="spacing_mm"),
        RecordAffined("image"),  # → d["image_original_affine"], to map predictions back
        PointsFromItemd("points"),
        PercentileNormalised("image", lower=percentiles[0], upper=percentiles[1]),
    ]


def roi_stage_transforms(train: bool, spacing_mm: float = 1.0, pad: int = 520, crop: int = 450,
                         cutout: float = 0.1, percentiles: tuple[float, float] = (5.0, 99.0),
                         local_contrast: Mapping | None = None) -> Compose:
    """Radiograph item → two half-image samples (patient's right knee first), knee centre as target.

    In training, halves without a knee are dropped (the ROI model has nothing to learn there).
    ``local_contrast`` equalises the resampled image before it is split, as inference does.
    """
    equalise = LocalContrast.from_preprocessing(local_contrast)
    return Compose(_head(percentiles) + [ResampleToSpacingd("image", spacing_mm, point_keys="points")]
                   + ([] if equalise is None else [LocalContrastd("image", equalise.tile_mm, equalise.clip_limit)])
                   + [SplitHalvesd("image", point_keys="points", drop_absent=train)] + _tail(train, pad, crop, cutout))


def landmark_stage_transforms(train: bool, size_mm: float = 140.0, spacing_mm: float = 0.3, pad: int = 520,
                              crop: int = 450, cutout: float = 0.1, local_contrast: Mapping | None = None,
                              percentiles: tuple[float, float] = (5.0, 99.0), intensity_region: str = "image"
                              ) -> Compose:
    """Knee item → a 140 mm ROI at 0.3 mm centred on landmark 4, left knees mirrored; 16 points as target.

    ``intensity_region`` ``"roi"`` scales the ROI again to its own ``percentiles`` (as inference does for
    such a model); ``local_contrast`` (a model's ``preprocessing["local_contrast"]``, e.g. ``{"kind":
    "clahe", "tile_mm": 16, "clip_limit": 0.01}``) then equalises it, before any random step.
    """
    roi = [CropRoid("image", centre_key="points", centre_id=4, size_mm=size_mm, spacing_mm=spacing_mm,
                    side_key="side", point_keys="points")]
    if intensity_region not in INTENSITY_REGIONS:
        raise ValueError(f"unknown intensity region {intensity_region!r}; expected one of {INTENSITY_REGIONS}")
    if intensity_region == "roi":
        roi.append(PercentileNormalised("image", lower=percentiles[0], upper=percentiles[1], constant_ok=True))
    equalise = LocalContrast.from_preprocessing(local_contrast)  # validates the spec, as inference does
    if equalise is not None:
        roi.append(LocalContrastd("image", equalise.tile_mm, equalise.clip_limit))
    return Compose(_head(percentiles) + roi + _tail(train, pad, crop, cutout))
