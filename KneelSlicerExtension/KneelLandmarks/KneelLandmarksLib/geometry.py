"""Pixels of a radiograph ↔ Slicer's RAS, through the volume node's IJK→RAS matrix.

Conventions: a landmark ``(x, y)`` is in the radiograph's pixels with pixel centres at integers,
``x`` the column and ``y`` the row (:mod:`kneel_monai`'s convention). Slicer's voxel index of that
pixel is ``(I, J, K) = (x, y, 0)`` — ``I`` runs along a row (the fastest axis of the image data),
``J`` down the columns, and a radiograph has one slice ``K = 0``. The volume's IJK→RAS matrix
(spacing, direction and origin together) takes it to RAS millimetres, so the points land exactly
on the image as Slicer shows it, whatever the volume's geometry.
"""

from __future__ import annotations

import numpy as np
import vtk

__all__ = [
    "ijk_to_ras_matrix", "numpy_matrix", "pixels_to_ras", "ras_to_pixels",
    "volume_spacing_row_col", "vtk_matrix",
]


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """A ``vtkMatrix4x4`` as a ``(4, 4)`` float64 array."""
    return np.array([[matrix.GetElement(i, j) for j in range(4)] for i in range(4)], dtype=np.float64)


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """A ``(4, 4)`` array as a ``vtkMatrix4x4``."""
    matrix = vtk.vtkMatrix4x4()
    for i in range(4):
        for j in range(4):
            matrix.SetElement(i, j, float(array[i][j]))
    return matrix


def ijk_to_ras_matrix(volume_node) -> np.ndarray:
    """The volume's ``(4, 4)`` IJK→RAS matrix (its own geometry; a parent transform is not applied)."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return numpy_matrix(matrix)


def pixels_to_ras(points_px, ijk_to_ras: np.ndarray) -> np.ndarray:
    """``(N, 2)`` ``(x, y)`` pixels → ``(N, 3)`` RAS mm: ``IJKToRAS · (x, y, 0, 1)``."""
    p = np.asarray(points_px, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must be (N, 2) (x, y) pixels, got shape {p.shape}")
    ijk = np.concatenate([p, np.zeros((len(p), 1)), np.ones((len(p), 1))], axis=1)
    return (ijk @ np.asarray(ijk_to_ras, dtype=np.float64).T)[:, :3]


def ras_to_pixels(points_ras, ijk_to_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 3)`` RAS mm → ``((N, 2) (x, y) pixels, (N,) K index)``; ``K`` is 0 on the image plane."""
    p = np.asarray(points_ras, dtype=np.float64).reshape(-1, 3)
    inverse = np.linalg.inv(np.asarray(ijk_to_ras, dtype=np.float64))
    ijk = np.concatenate([p, np.ones((len(p), 1))], axis=1) @ inverse.T
    return ijk[:, :2], ijk[:, 2]


def volume_spacing_row_col(volume_node) -> tuple[float, float]:
    """The volume's pixel spacing as ``(row, col)`` mm (Slicer's spacing is ``(I, J, K)`` = ``(col, row, slice)``)."""
    s_i, s_j, _ = volume_node.GetSpacing()
    return float(s_j), float(s_i)
