"""Landmark points and the image affine: how points follow every geometric transform.

Conventions (the whole project):

* an image is a ``MetaTensor`` ``(C, H, W)``; its ``affine`` (3×3) maps the homogeneous pixel
  index ``(row, col, 1)`` to image-plane millimetres;
* landmarks are ``(..., 2)`` arrays of ``(x, y)`` = ``(col, row)`` pixel positions in the
  image they travel with (pixel centres at integers); ``NaN`` marks an absent point.

A geometric transform that keeps the ``affine`` consistent with the pixels (MONAI's spatial
transforms do, and so do this project's) leaves each anatomical point's millimetre position
unchanged, so a point follows the image by ``p_new = A_new⁻¹ · A_old · p_old``. The same
identity inverts a whole chain at once: a prediction in the final image maps back to the
original pixels through ``A_original⁻¹ · A_final``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["affine_of", "xy_to_index", "index_to_xy", "transform_points", "points_between", "points_to_mm"]


def affine_of(image) -> torch.Tensor:
    """The 3×3 float64 affine of a 2-D ``MetaTensor`` ``(C, H, W)``."""
    affine = getattr(image, "affine", None)
    if affine is None:
        raise ValueError("landmarks can only follow a MetaTensor image (it carries the affine); got a plain array")
    affine = torch.as_tensor(affine, dtype=torch.float64)
    if affine.shape != (3, 3):
        raise ValueError(f"expected a 2-D image with a 3×3 affine, got affine of shape {tuple(affine.shape)}")
    return affine


def xy_to_index(points):
    """``(x, y)`` → ``(row, col)`` (the order of the image's spatial axes)."""
    return points[..., [1, 0]]


index_to_xy = xy_to_index  # the swap is its own inverse


def transform_points(points_xy, matrix) -> np.ndarray | torch.Tensor:
    """Apply a 3×3 homogeneous ``matrix`` (acting on ``(row, col)`` indices) to ``(..., 2)`` ``(x, y)`` points.

    The homogeneous product MONAI's :class:`~monai.transforms.ApplyTransformToPoints` computes
    (``tests/test_transforms.py`` checks the two agree), written out so that the inference path
    need not import MONAI; keeps the input's type (numpy or torch) and dtype, and ``NaN`` points
    stay ``NaN``.
    """
    is_numpy = isinstance(points_xy, np.ndarray)
    pts = torch.as_tensor(np.asarray(points_xy) if is_numpy else points_xy)
    if pts.shape[-1] != 2:
        raise ValueError(f"points must be (..., 2) (x, y), got shape {tuple(pts.shape)}")
    dtype = pts.dtype if pts.is_floating_point() else torch.float64
    matrix = torch.as_tensor(matrix, dtype=torch.float64)
    if matrix.shape != (3, 3):
        raise ValueError(f"expected a 3×3 homogeneous matrix, got shape {tuple(matrix.shape)}")
    index = xy_to_index(pts.to(torch.float64)).reshape(-1, 2)
    moved = index @ matrix[:2, :2].T + matrix[:2, 2]
    out = index_to_xy(moved.reshape(pts.shape)).to(dtype)
    return out.numpy() if is_numpy else out


def points_between(points_xy, affine_from, affine_to):
    """Move ``(x, y)`` pixel points of an image with ``affine_from`` into one with ``affine_to``."""
    matrix = torch.linalg.inv(torch.as_tensor(affine_to, dtype=torch.float64)) @ torch.as_tensor(
        affine_from, dtype=torch.float64
    )
    return transform_points(points_xy, matrix)


def points_to_mm(points_xy, affine):
    """``(x, y)`` pixel points → ``(x_mm, y_mm)`` image-plane millimetres (column axis, row axis)."""
    return transform_points(points_xy, affine)
