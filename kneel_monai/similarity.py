"""Similarity transforms between point sets: weighted least squares (Umeyama) and a robust (Huber IRLS) fit.

Used to register an exact annotation shape onto a crop whose pose is unknown, to align a
prediction to its reference before measuring the shape error, and for the mean-shape baseline.
A similarity is ``dst ≈ s·R·src + t`` (no reflection), stored as a 2×3 matrix ``[[a, −b, tx], [b, a, ty]]``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_similarity", "robust_similarity", "apply_similarity", "similarity_scale", "similarity_angle_deg",
           "aligned_residuals"]


def apply_similarity(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points through a 2×3 similarity."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


def similarity_scale(matrix: np.ndarray) -> float:
    return float(np.hypot(matrix[0, 0], matrix[1, 0]))


def similarity_angle_deg(matrix: np.ndarray) -> float:
    return float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))


def fit_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares similarity ``src → dst`` (closed form, Umeyama 1991 without reflection)."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (N >= 2, 2) point sets of one shape, got {src.shape} and {dst.shape}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    s0, d0 = src - mu_s, dst - mu_d
    # in complex form the optimal a + ib is sum(w·conj(s)·d) / sum(w·|s|²)
    zs, zd = s0[:, 0] + 1j * s0[:, 1], d0[:, 0] + 1j * d0[:, 1]
    denom = float(w @ (np.abs(zs) ** 2))
    if denom <= 0:
        raise ValueError("source points coincide; no similarity is defined")
    c = complex(np.sum(w * np.conj(zs) * zd)) / denom
    a, b = c.real, c.imag
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (mu_d - rot @ mu_s)[:, None]])


def robust_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None, delta: float = 2.0,
                      iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Similarity ``src → dst`` under a Huber loss (iteratively reweighted least squares).

    ``delta`` is the residual (in ``dst`` units) beyond which a point counts linearly, so a few
    badly placed points do not drag the pose. Returns ``(matrix, final per-point residuals)``.
    """
    base = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    matrix = fit_similarity(src, dst, base)
    for _ in range(iterations):
        res = np.linalg.norm(apply_similarity(matrix, src) - dst, axis=1)
        huber = np.where(res <= delta, 1.0, delta / np.maximum(res, 1e-12))
        new = fit_similarity(src, dst, base * huber)
        if np.abs(new - matrix).max() < 1e-9:
            matrix = new
            break
        matrix = new
    return matrix, np.linalg.norm(apply_similarity(matrix, src) - dst, axis=1)


def aligned_residuals(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-point distances after the least-squares similarity of ``points`` onto ``reference``.

    The shape error alone: any pose (offset, scale, rotation) difference is removed first.
    """
    matrix = fit_similarity(points, reference)
    return np.linalg.norm(apply_similarity(matrix, points) - np.asarray(reference, dtype=np.float64), axis=1)
