"""MONAI transforms that read radiographs: :func:`~kneel_monai.io.reading.read_radiograph` in a MONAI chain."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from .reading import SpacingLike, _as_spacing, read_radiograph

__all__ = ["LoadRadiograph", "LoadRadiographd", "LoadRadiographD", "LoadRadiographDict"]


class LoadRadiograph(Transform):
    """Array transform: a path → :func:`read_radiograph`'s ``MetaTensor``.

    Args:
        spacing_mm: default spacing (number or ``(row, col)`` mm); it overrides the file's,
            see :func:`read_radiograph`. A per-call ``spacing_mm`` overrides it.
    """

    def __init__(self, spacing_mm: SpacingLike = None) -> None:
        self.spacing_mm = _as_spacing(spacing_mm)

    def __call__(self, filename: str | os.PathLike, spacing_mm: SpacingLike = None) -> MetaTensor:
        spacing = _as_spacing(spacing_mm) if spacing_mm is not None else self.spacing_mm
        return read_radiograph(filename, spacing)


class LoadRadiographd(MapTransform):
    """Dictionary transform: replaces the path under each key with the radiograph.

    Args:
        keys: keys of the paths to load.
        spacing_key: optional key of a per-item spacing (number or ``(row, col)`` mm, or
            ``None``); when the item has it, it overrides the file's spacing for every key.
        allow_missing_keys: don't raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spacing_key: Hashable | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spacing_key = spacing_key
        self._loader = LoadRadiograph()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        spacing = d.get(self.spacing_key) if self.spacing_key is not None else None
        for key in self.key_iterator(d):
            d[key] = self._loader(d[key], spacing_mm=spacing)
        return d


LoadRadiographD = LoadRadiographDict = LoadRadiographd
