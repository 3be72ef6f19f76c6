"""Dictionary twins: the image under ``image_key`` moves, landmark arrays under ``point_keys`` follow.

Landmark arrays are ``(..., 2)`` ``(x, y)`` pixel positions in the image they travel with;
``NaN`` marks an absent point. Points move by the change of the image's affine
(:func:`~kneel_monai.transforms.points.points_between`), so any MONAI spatial transform that
keeps its ``MetaTensor`` affine up to date can be wrapped in :class:`FollowAffined`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandFlipd, Randomizable

from ..landmarks import NUM_LANDMARKS, SIDES, flip_landmark_ids
from .array import CropRoi, ResampleToSpacing, SplitHalves
from .points import affine_of, points_between

__all__ = ["RecordAffined", "FollowAffined", "ResampleToSpacingd", "CropRoid", "SplitHalvesd", "RandFlipLandmarksd"]

#: Knee sides in the order of the image halves: the image's left half is the patient's right knee.


def _move_points(d: dict, point_keys: Sequence[Hashable], before: torch.Tensor, after: torch.Tensor,
                 allow_missing: bool) -> None:
    for key in point_keys:
        if key not in d:
            if allow_missing:
                continue
            raise KeyError(f"landmark key {key!r} not in the data (keys: {sorted(map(str, d))})")
        d[key] = points_between(d[key], before, after)


class RecordAffined(MapTransform):
    """Keep a copy of each image's affine under ``f"{key}_{suffix}"`` (default ``image_original_affine``).

    Put it right after loading: at the end of any chain, predictions ``p`` in the final image go
    back to the radiograph's pixels with ``points_between(p, d["image"].affine, d["image_original_affine"])``.
    """

    def __init__(self, keys: KeysCollection, suffix: str = "original_affine", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.suffix = suffix

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}_{self.suffix}"] = affine_of(d[key]).clone()
        return d


class FollowAffined(Randomizable, MapTransform):
    """Run a dictionary transform on the image, then move the landmark arrays with the affine change.

    Args:
        transform: a MONAI (dictionary) spatial transform acting on ``image_key``, e.g.
            ``SpatialPadd``, ``CenterSpatialCropd``, ``RandSpatialCropd``, ``Spacingd``. It may
            return one dict or a list of dicts (multi-sample crops).
        image_key: whose affine the points follow.
        point_keys: landmark arrays to move.
    """

    def __init__(self, transform, image_key: str = "image", point_keys: KeysCollection = ("landmarks",),
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, [image_key], allow_missing_keys)
        self.transform = transform
        self.image_key = image_key
        self.point_keys = [point_keys] if isinstance(point_keys, str) else list(point_keys)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: Any) -> None:  # the wrapped transform draws its own parameters
        pass

    def __call__(self, data: Mapping) -> dict | list[dict]:
        before = affine_of(data[self.image_key]).clone()
        result = self.transform(dict(data))
        outputs = result if isinstance(result, list) else [result]
        for d in outputs:
            _move_points(d, self.point_keys, before, affine_of(d[self.image_key]), self.allow_missing_keys)
        return result


class ResampleToSpacingd(MapTransform):
    """Dictionary twin of :class:`ResampleToSpacing`; ``point_keys`` follow."""

    def __init__(self, keys: KeysCollection, spacing_mm: float, point_keys: KeysCollection = (),
                 antialias: bool = True, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.resample = ResampleToSpacing(spacing_mm, antialias)
        self.point_keys = [point_keys] if isinstance(point_keys, str) else list(point_keys)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        keys = list(self.key_iterator(d))
        for i, key in enumerate(keys):
            before = affine_of(d[key]).clone()
            d[key] = self.resample(d[key])
            if i == 0:  # points follow the first image
                _move_points(d, self.point_keys, before, affine_of(d[key]), self.allow_missing_keys)
        return d


class CropRoid(MapTransform):
    """Dictionary twin of :class:`CropRoi`: an ROI of ``size_mm`` around a landmark, flipped to a right knee.

    The centre is ``d[centre_key]`` (an ``(x, y)`` pair, or a ``(N, 2)`` array with ``centre_id``
    picking the row — e.g. landmark 4, the tibial centre). The ROI is mirrored when
    ``d[side_key] == "L"`` (flip-to-right: a left knee then looks like a right knee; ids are
    anatomical and need no re-ordering for it). ``point_keys`` follow.
    """

    def __init__(self, keys: KeysCollection, centre_key: str, centre_id: int | None = None,
                 size_mm: float = 140.0, spacing_mm: float = 0.3, side_key: str | None = "side",
                 point_keys: KeysCollection = (), allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.crop = CropRoi(size_mm, spacing_mm)
        self.centre_key, self.centre_id, self.side_key = centre_key, centre_id, side_key
        self.point_keys = [point_keys] if isinstance(point_keys, str) else list(point_keys)

    def centre_of(self, d: Mapping) -> tuple[float, float]:
        centre = np.asarray(torch.as_tensor(d[self.centre_key]).detach().cpu(), dtype=np.float64)
        if self.centre_id is not None:
            centre = centre.reshape(-1, 2)[self.centre_id]
        centre = centre.reshape(-1)
        if centre.shape != (2,) or not np.isfinite(centre).all():
            raise ValueError(f"ROI centre from {self.centre_key!r} must be one finite (x, y) pair, got {centre}")
        return float(centre[0]), float(centre[1])

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        centre = self.centre_of(d)
        side = d.get(self.side_key) if self.side_key else None
        if side not in (None, *SIDES):
            raise ValueError(f"{self.side_key!r} must be one of {SIDES}, got {side!r}")
        keys = list(self.key_iterator(d))
        for i, key in enumerate(keys):
            before = affine_of(d[key]).clone()
            d[key] = self.crop(d[key], centre, mirror=side == "L")
            if i == 0:
                _move_points(d, self.point_keys, before, affine_of(d[key]), self.allow_missing_keys)
        return d


class SplitHalvesd(MapTransform):
    """Split a bilateral radiograph into two samples, one per knee.

    Input: ``d[image_key]`` the whole radiograph; each of ``point_keys`` holds ``(2, N, 2)``
    points, row 0 the patient's right knee (image left half), row 1 the left knee (NaN when
    absent). Output: ``[right_knee_dict, left_knee_dict]``, each with the half image, its
    ``(N, 2)`` points in the half's pixels, and ``d["side"]`` = ``"R"`` / ``"L"``. With
    ``drop_absent=True`` (training) a half whose first point key is all-NaN is left out.
    """

    def __init__(self, image_key: str = "image", point_keys: KeysCollection = (), side_key: str = "side",
                 drop_absent: bool = False) -> None:
        super().__init__([image_key])
        self.image_key, self.side_key, self.drop_absent = image_key, side_key, drop_absent
        self.point_keys = [point_keys] if isinstance(point_keys, str) else list(point_keys)
        self.split = SplitHalves()

    def __call__(self, data: Mapping) -> list[dict]:
        before = affine_of(data[self.image_key]).clone()
        halves = self.split(data[self.image_key])
        outputs = []
        for index, (side, half) in enumerate(zip(SIDES, halves)):
            d = dict(data)
            d[self.image_key], d[self.side_key] = half, side
            for key in self.point_keys:
                points = data[key]
                if points.shape[0] != 2:
                    raise ValueError(f"{key!r} must be (2, N, 2) — right knee, left knee — got {tuple(points.shape)}")
                d[key] = points_between(points[index], before, affine_of(half))
            if self.drop_absent and self.point_keys and np.isnan(np.asarray(d[self.point_keys[0]])).all():
                continue
            outputs.append(d)
        return outputs


class RandFlipLandmarksd(Randomizable, MapTransform):
    """Random horizontal flip (augmentation) that also re-orders the 16 landmark ids.

    A flip swaps lateral and medial, so after mirroring the points, tibia ``i ↔ 8 − i`` and femur
    ``9 + j ↔ 15 − j`` (:data:`~kneel_monai.landmarks.FLIP_PERMUTATION`) keep the labels right.
    Built on MONAI's ``RandFlipd`` (columns axis); points with other than 16 rows are only mirrored.
    """

    def __init__(self, image_key: str = "image", point_keys: KeysCollection = ("landmarks",),
                 prob: float = 0.5) -> None:
        MapTransform.__init__(self, [image_key])
        self.image_key = image_key
        self.point_keys = [point_keys] if isinstance(point_keys, str) else list(point_keys)
        self.flip = FollowAffined(RandFlipd(keys=image_key, prob=prob, spatial_axis=1), image_key, self.point_keys)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.flip.set_random_state(seed, state)
        return self

    def randomize(self, data: Any) -> None:
        pass

    def __call__(self, data: Mapping) -> dict:
        before = affine_of(data[self.image_key]).clone()
        d = self.flip(data)
        after = affine_of(d[self.image_key])
        mirrored = torch.linalg.det((torch.linalg.inv(after) @ before)[:2, :2]) < 0
        if mirrored:
            for key in self.point_keys:
                if d[key].shape[-2] == NUM_LANDMARKS:
                    d[key] = flip_landmark_ids(d[key])
        return d
