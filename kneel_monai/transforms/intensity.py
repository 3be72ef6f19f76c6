"""Intensity normalisation of method.md §2 (clip to the 5th–99th percentile, scale to [0, 1]) and local
contrast (CLAHE). The arithmetic is in :mod:`.functional` (the inference path calls it without MONAI)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from ..model_io import INTENSITY_REGIONS
from . import functional as KF

__all__ = ["INTENSITY_REGIONS", "PercentileNormalise", "PercentileNormalised", "LocalContrast", "LocalContrastd"]


class PercentileNormalise(Transform):
    """Clip to the ``lower``–``upper`` percentiles and scale to [0, 1].

    When the two percentiles coincide (an image that is mostly one value) the full min–max
    range is used instead; a constant image is an error naming the file, never a silent NaN.
    """

    def __init__(self, lower: float = 5.0, upper: float = 99.0, constant_ok: bool = False) -> None:
        KF.check_percentiles(lower, upper)
        self.lower, self.upper = lower / 100, upper / 100
        self.constant_ok = constant_ok  # a ROI may be all background (a scan start off the film): zeros, no error

    @classmethod
    def from_preprocessing(cls, intensity: Mapping | None) -> PercentileNormalise:
        """The [0, 1] scaling a model's ``preprocessing["intensity"]`` asks for: its ``lower``/``upper``
        percentiles (5/99 when absent; a converted release model's mean/std step follows in
        ``KneelModel.network_input``)."""
        return cls(*KF.percentile_limits(intensity))

    @classmethod
    def for_roi(cls, intensity: Mapping | None) -> PercentileNormalise | None:
        """The second scaling, of each knee ROI to its own percentiles, when ``intensity["region"]`` is
        ``"roi"``; None when the radiograph's scaling is the only one (``"image"``, the default)."""
        limits = KF.roi_percentile_limits(intensity)
        return None if limits is None else cls(*limits, constant_ok=True)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return KF.percentile_normalise(img, self.lower * 100, self.upper * 100, self.constant_ok)


class PercentileNormalised(MapTransform):
    """Dictionary twin of :class:`PercentileNormalise`."""

    def __init__(self, keys: KeysCollection, lower: float = 5.0, upper: float = 99.0, constant_ok: bool = False,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalise = PercentileNormalise(lower, upper, constant_ok)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalise(d[key])
        return d


class LocalContrast(Transform):
    """CLAHE (contrast-limited adaptive histogram equalisation) at a fixed physical tile size.

    Real knee crops in public datasets are often CLAHE-processed while radiographs straight from
    the scanner are not; equalising every network input the same way brings both to similar local
    histograms, so one model serves both (the measurement behind this choice: docs/real_knees.md).
    The tile is given in millimetres so the result does not depend on the image's pixel size;
    input and output are in [0, 1] and the affine is kept.
    """

    def __init__(self, tile_mm: float = 16.0, clip_limit: float = 0.01, bins: int = 256) -> None:
        KF.check_clahe(tile_mm, clip_limit)
        self.tile_mm, self.clip_limit, self.bins = float(tile_mm), float(clip_limit), int(bins)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return KF.local_contrast(img, self.tile_mm, self.clip_limit, self.bins)

    @classmethod
    def from_preprocessing(cls, spec: Mapping | None) -> LocalContrast | None:
        """The transform a model's ``preprocessing["local_contrast"]`` asks for (``None``: none)."""
        settings = KF.local_contrast_settings(spec)
        return None if settings is None else cls(**settings)


class LocalContrastd(MapTransform):
    """Dictionary twin of :class:`LocalContrast`."""

    def __init__(self, keys: KeysCollection, tile_mm: float = 16.0, clip_limit: float = 0.01,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.equalise = LocalContrast(tile_mm, clip_limit)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.equalise(d[key])
        return d
