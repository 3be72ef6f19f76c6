"""How plausible 16 points are as a knee: a point-distribution model of annotated real knees.

Shapes are put in one orientation (left knees mirrored), aligned to the model's mean by a
similarity (pose and size are not shape), then described by their principal modes. The **shape
distance** of a set of points is the Mahalanobis distance of its mode scores plus the part of the
shape the modes cannot express, in units of what the annotated knees show:

    d² = Σ_i b_i² / λ_i + ‖r‖² / ρ²,

where ``b`` are the scores on the ``k`` modes (variances ``λ``) and ``r`` the residual outside
them (mean squared norm ``ρ²`` over the annotated knees). Annotated knees have d ≈ √(k + 1); a
prediction spread along a collimation edge, on a lateral view or across two knees lies far out.

The shipped model (``plausibility_model.json``) was fitted on the KNEEL annotations of the
training part of the real OAI crop set (``benchmarks/calibrate_quality_real.py`` rebuilds it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .similarity import apply_similarity, fit_similarity

__all__ = ["PlausibilityModel", "procrustes_mean", "fit_plausibility_model", "load_plausibility_model",
           "shape_distance",
           "right_oriented"]

_FORMAT = "kneel-monai/shape-plausibility"


def right_oriented(points: np.ndarray, side: str) -> np.ndarray:
    """Points in the right-knee orientation (lateral on the image's left): left knees mirrored."""
    p = np.asarray(points, dtype=np.float64).copy()
    if side == "L":
        p[:, 0] = -p[:, 0]
    return p


def _normalised(points: np.ndarray) -> np.ndarray:
    c = points - points.mean(axis=0)
    return c / np.sqrt((c ** 2).sum())


@dataclass(frozen=True)
class PlausibilityModel:
    mean: np.ndarray  # (16, 2), centred, unit size
    modes: np.ndarray  # (k, 32) orthonormal
    variances: np.ndarray  # (k,)
    residual_var: float  # mean squared norm of what the modes leave
    source: str = ""

    def distance(self, points: np.ndarray, side: str = "R") -> float:
        """The shape distance of ``(16, 2)`` points of a knee on ``side`` (any pose, size, unit)."""
        shape = _normalised(right_oriented(points, side))
        if not np.isfinite(shape).all():
            return float("inf")
        aligned = apply_similarity(fit_similarity(shape, self.mean), shape).ravel() - self.mean.ravel()
        scores = self.modes @ aligned
        residual = aligned - self.modes.T @ scores
        return float(np.sqrt((scores ** 2 / self.variances).sum() + (residual ** 2).sum() / self.residual_var))

    def to_json(self) -> dict:
        return {"format": _FORMAT, "mean": self.mean.tolist(), "modes": self.modes.tolist(),
                "variances": self.variances.tolist(), "residual_var": self.residual_var, "source": self.source}

    @classmethod
    def from_json(cls, data: dict) -> PlausibilityModel:
        if data.get("format") != _FORMAT:
            raise ValueError(f"not a shape plausibility model (format is not {_FORMAT!r})")
        return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["modes"], dtype=np.float64),
                   np.asarray(data["variances"], dtype=np.float64), float(data["residual_var"]),
                   str(data.get("source", "")))

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, json.dumps(self.to_json(), indent=1) + "\n")


def procrustes_mean(shapes: list[np.ndarray], sides: list[str], iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Generalised Procrustes analysis (similarity) of knee shapes in the right-knee orientation
    (left knees mirrored first): ``(mean (16, 2) centred, unit size; the aligned shapes (N, 16, 2))``.
    ``right_oriented(mean, side)`` gives the mean in a side's own orientation."""
    if not len(shapes):
        raise ValueError("no shapes to average")
    norm = [_normalised(right_oriented(s, side)) for s, side in zip(shapes, sides)]
    mean = norm[0]
    for _ in range(iterations):
        aligned = np.array([apply_similarity(fit_similarity(s, mean), s) for s in norm])
        mean = _normalised(aligned.mean(axis=0))
    return mean, aligned


def fit_plausibility_model(shapes: list[np.ndarray], sides: list[str], variance_kept: float = 0.95,
                           source: str = "", iterations: int = 10) -> PlausibilityModel:
    """Generalised Procrustes alignment (similarity) of annotated shapes, then PCA keeping ``variance_kept``."""
    if len(shapes) < 10:
        raise ValueError(f"need at least 10 shapes to fit a shape model, got {len(shapes)}")
    mean, aligned = procrustes_mean(shapes, sides, iterations)
    flat = aligned.reshape(len(aligned), -1) - mean.ravel()
    _, sing, vt = np.linalg.svd(flat, full_matrices=False)
    var = sing ** 2 / (len(flat) - 1)
    k = int(np.searchsorted(np.cumsum(var) / var.sum(), variance_kept) + 1)
    modes = vt[:k]
    residual = flat - (flat @ modes.T) @ modes
    return PlausibilityModel(mean, modes, var[:k], float((residual ** 2).sum(axis=1).mean()), source)


def default_model_path() -> Path:
    return Path(__file__).with_name("plausibility_model.json")


@lru_cache(maxsize=4)
def load_plausibility_model(path: str | None = None) -> PlausibilityModel:
    """The shipped model (or one at ``path``)."""
    p = Path(path) if path else default_model_path()
    try:
        return PlausibilityModel.from_json(json.loads(p.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{p}: cannot read the shape plausibility model ({err})") from None


def shape_distance(points: np.ndarray, side: str = "R") -> float:
    """:meth:`PlausibilityModel.distance` with the shipped model."""
    return load_plausibility_model().distance(points, side)
