"""The image the inference path carries: pixels, their affine to millimetres and metadata, without MONAI.

MONAI's ``MetaTensor`` is the project's image everywhere a MONAI workflow runs (the bundle, training,
MONAI Label, the dictionary transforms). Importing MONAI, though, costs a one-radiograph
``kneel predict`` about a third of its run (it loads every MONAI submodule and what they find
installed: docs/benchmarks.md), and inference uses only three of a ``MetaTensor``'s fields. So the
inference path (reading, the pipeline's transforms, the predictor) works on anything with those
fields — ``.as_tensor()``, ``.affine`` (3×3, pixel index ``(row, col, 1)`` → mm) and ``.meta`` —
and every project transform returns the kind of image it was given (:func:`image_like`): a
``MetaTensor`` in a MONAI chain, an :class:`AffineImage` in ``kneel predict``, with the same
pixels and affine. :meth:`AffineImage.to_metatensor` goes across.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["AffineImage", "carries_affine", "image_like", "is_metatensor"]


def carries_affine(image: Any) -> bool:
    """Whether ``image`` has what the inference path uses of a ``MetaTensor``: ``.as_tensor()`` and ``.affine``."""
    return hasattr(image, "as_tensor") and getattr(image, "affine", None) is not None


class AffineImage:
    """A channel-first 2-D image ``(C, H, W)``, its 3×3 float64 affine and its metadata.

    Shares the tensor it is given (no copy). ``meta`` never holds the affine (it is ``.affine``).
    """

    __slots__ = ("_data", "affine", "meta")

    def __init__(self, data: Any, affine: Any, meta: Mapping[str, Any] | None = None) -> None:
        self._data = torch.as_tensor(data)
        self.affine = torch.as_tensor(affine, dtype=torch.float64)
        if self.affine.shape != (3, 3):
            raise ValueError(f"an AffineImage needs a 3×3 affine, got shape {tuple(self.affine.shape)}")
        self.meta = {k: v for k, v in (meta or {}).items() if k != "affine"}

    @classmethod
    def of(cls, image: Any) -> AffineImage:
        """The same pixels, affine and metadata, from a ``MetaTensor`` or an ``AffineImage``."""
        if isinstance(image, AffineImage):
            return image
        if not carries_affine(image):
            raise ValueError(f"expected an image carrying its affine (a MetaTensor), got {type(image).__name__}")
        return cls(image.as_tensor(), image.affine, getattr(image, "meta", None))

    def as_tensor(self) -> torch.Tensor:
        return self._data

    def numpy(self) -> np.ndarray:
        return self._data.detach().cpu().numpy()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # np.asarray(image), as for a tensor
        return np.asarray(self.numpy(), dtype=dtype)

    @property
    def shape(self) -> torch.Size:
        return self._data.shape

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def dtype(self) -> torch.dtype:
        return self._data.dtype

    def to_metatensor(self):
        """The MONAI ``MetaTensor`` of this image (imports MONAI)."""
        from monai.data import MetaTensor

        return MetaTensor(self._data, affine=self.affine, meta=dict(self.meta))

    def __repr__(self) -> str:
        return f"AffineImage(shape={tuple(self.shape)}, dtype={self.dtype}, spacing-affine={self.affine.tolist()})"


def is_metatensor(image: Any) -> bool:
    """Whether ``image`` is a MONAI ``MetaTensor`` — without importing MONAI (if it is not imported, it is not)."""
    module = sys.modules.get("monai.data.meta_tensor")
    return module is not None and isinstance(image, module.MetaTensor)


def image_like(like: Any, data: torch.Tensor, affine: torch.Tensor | None = None,
               meta: Mapping[str, Any] | None = None) -> Any:
    """An image of ``like``'s kind (``MetaTensor`` or :class:`AffineImage`) holding ``data``.

    ``affine`` defaults to ``like``'s; ``meta`` (default ``like``'s, without its affine) is copied.
    """
    affine = torch.as_tensor(like.affine if affine is None else affine, dtype=torch.float64)
    meta = {k: v for k, v in (like.meta if meta is None else meta).items() if k != "affine"}
    if is_metatensor(like):
        return sys.modules["monai.data.meta_tensor"].MetaTensor(data, affine=affine, meta=meta)
    return AffineImage(data, affine, meta)
