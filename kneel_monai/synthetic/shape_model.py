"""A statistical shape model of the 16 KNEEL landmarks, fitted to the 748 annotated OAI knees.

Shapes are ``(16, 2)`` arrays of ``(x, y)`` in **millimetres**, in right-knee orientation
(x grows lateral → medial, y grows downwards like image rows), with landmark 4 (the tibial
centre) at the origin.

The model (see :func:`fit_shape_model`):

* every annotated knee is converted to mm (the CSV is at 0.3 mm/px) and centred on landmark 4;
* a rotation-only Procrustes alignment about landmark 4 removes the in-plane tilt of each
  knee (size is kept: real knees differ in size, and the renderer needs mm); the tilts'
  spread is kept as ``rotation_std_deg`` so a generator can put it back;
* PCA of the aligned shapes keeps the components that explain ``variance_kept`` of the
  variance (the rest is mostly annotation noise, which would make rendered contours wobble);
* the KL grade enters as a per-grade mean of the PCA scores plus one within-grade covariance
  shared by all grades (an LDA-style Gaussian model): ``scores | kl ~ N(mu_kl, S_within)``.
  Pooled over the CSV's grade frequencies this reproduces the data's mean and covariance.

Per-grade joint-space widths (vertical gap between femoral and tibial landmarks in the lateral
and medial compartments) and bone widths are stored for reference and tests.

The fitted model ships inside the package as ``shape_model.json``; :func:`load_shape_model`
reads it (nothing outside the package is needed at run time) and :func:`fit_shape_model`
re-fits it from the CSV (``kneel_monai.synthetic.shape_model`` run as a script rewrites the
shipped file).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text

__all__ = [
    "CSV_SPACING_MM",
    "KL_GRADES",
    "ShapeModel",
    "default_csv_path",
    "read_landmark_csv",
    "fit_shape_model",
    "load_shape_model",
    "sample_knee_shape",
    "joint_space_widths_mm",
    "rotate_shape",
    "SHIPPED_MODEL_PATH",
]

#: Pixel spacing of the KNEEL OAI annotation CSV (method.md §6).
CSV_SPACING_MM = 0.3
KL_GRADES = (0, 1, 2, 3, 4)
SHIPPED_MODEL_PATH = Path(__file__).with_name("shape_model.json")
_FORMAT = "kneel-monai/shape-model"
_FORMAT_VERSION = 1

# Landmark pairs (femur id, tibia id) whose vertical gap measures each compartment's joint space.
_LATERAL_JSW_PAIR = (10, 1)
_MEDIAL_JSW_PAIR = (14, 7)


def default_csv_path() -> Path:
    """The KNEEL annotation CSV shipped with the package (:func:`kneel_monai.data.oai.default_annotation_csv`)."""
    from ..data.oai import default_annotation_csv

    return default_annotation_csv()


def read_landmark_csv(path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read the KNEEL OAI annotation CSV.

    Returns ``(points_px, kl, side)``: ``(N, 16, 2)`` float64 ``(x, y)`` in the 0.3 mm ROI
    (right-knee orientation, as stored), ``(N,)`` int KL grades and ``(N,)`` ``"L"``/``"R"``.
    """
    path = Path(path) if path is not None else default_csv_path()
    points, kls, sides = [], [], []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            tibia = np.asarray(row["tibia"].split(","), dtype=np.float64).reshape(9, 2)
            femur = np.asarray(row["femur"].split(","), dtype=np.float64).reshape(7, 2)
            points.append(np.vstack([tibia, femur]))
            kls.append(int(row["kl"]))
            sides.append(row["side"].strip().upper())
    if not points:
        raise ValueError(f"{path}: no rows")
    return np.stack(points), np.asarray(kls, dtype=np.int64), np.asarray(sides)


def rotate_shape(shape: np.ndarray, angle_rad: float | np.ndarray) -> np.ndarray:
    """Rotate ``(..., 16, 2)`` shapes about the origin by ``angle`` (image axes, y down: positive = clockwise on
    screen)."""
    angle = np.asarray(angle_rad, dtype=np.float64)[..., None]
    c, s = np.cos(angle), np.sin(angle)
    x, y = shape[..., 0], shape[..., 1]
    return np.stack([c * x - s * y, s * x + c * y], axis=-1)


def joint_space_widths_mm(shapes: np.ndarray) -> np.ndarray:
    """``(..., 2)`` lateral and medial joint-space widths (vertical tibia − femur gap) in mm."""
    lat = shapes[..., _LATERAL_JSW_PAIR[1], 1] - shapes[..., _LATERAL_JSW_PAIR[0], 1]
    med = shapes[..., _MEDIAL_JSW_PAIR[1], 1] - shapes[..., _MEDIAL_JSW_PAIR[0], 1]
    return np.stack([lat, med], axis=-1)


def _align_rotations(shapes: np.ndarray, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Rotation-only generalised Procrustes about the origin; returns (aligned, angles removed)."""
    target = shapes.mean(axis=0)
    angles = np.zeros(len(shapes))
    aligned = shapes
    for _ in range(iterations):
        # angle maximising sum <R(a) p, q>: atan2(sum(p x q), sum(p . q))
        cross = (shapes[..., 0] * target[:, 1] - shapes[..., 1] * target[:, 0]).sum(axis=1)
        dot = (shapes * target).sum(axis=(1, 2))
        angles = np.arctan2(cross, dot)
        aligned = rotate_shape(shapes, angles)
        new_target = aligned.mean(axis=0)
        # keep the mean's orientation that of the raw data's mean (no drift of the frame)
        raw_mean = shapes.mean(axis=0)
        c = (new_target[:, 0] * raw_mean[:, 1] - new_target[:, 1] * raw_mean[:, 0]).sum()
        d = (new_target * raw_mean).sum()
        new_target = rotate_shape(new_target, np.arctan2(c, d))
        if np.abs(new_target - target).max() < 1e-10:
            target = new_target
            break
        target = new_target
    angles = angles - angles.mean()  # removed tilts are spread around zero
    return rotate_shape(shapes, angles), angles


@dataclass(frozen=True)
class ShapeModel:
    """Fitted model; arrays are float64. ``D = 32`` (16 points × (x, y), flattened x0, y0, x1, ...)."""

    mean: np.ndarray  # (16, 2) mm, aligned mean shape
    components: np.ndarray  # (K, 32) orthonormal rows
    variances: np.ndarray  # (K,) mm², pooled variance along each component
    kl_grades: tuple[int, ...]
    kl_frequencies: np.ndarray  # (G,) fraction of CSV knees per grade
    kl_score_means: np.ndarray  # (G, K) mean PCA score per grade
    within_kl_covariance: np.ndarray  # (K, K) shared within-grade covariance of the scores
    rotation_std_deg: float  # spread of the tilts removed by the alignment
    kl_stats: dict = field(default_factory=dict)  # per-grade JSW / widths (reference only)
    source: dict = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return len(self.variances)

    def kl_index(self, kl: int) -> int:
        if kl not in self.kl_grades:
            raise ValueError(f"KL grade must be one of {self.kl_grades}, got {kl!r}")
        return self.kl_grades.index(kl)

    def shape_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """``(..., K)`` scores → ``(..., 16, 2)`` mm shapes (landmark 4 stays at the origin)."""
        flat = self.mean.reshape(-1) + np.asarray(scores) @ self.components
        return flat.reshape(*np.shape(scores)[:-1], 16, 2)

    def sample_scores(self, rng: np.random.Generator, kl: int, n: int | None = None) -> np.ndarray:
        chol = np.linalg.cholesky(self.within_kl_covariance)
        size = (self.n_components,) if n is None else (n, self.n_components)
        z = rng.standard_normal(size)
        return self.kl_score_means[self.kl_index(kl)] + z @ chol.T

    # --- (de)serialisation --------------------------------------------------------------
    def to_json_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "units": "mm; right-knee orientation; x lateral->medial, y down; landmark 4 at the origin",
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "variances": self.variances.tolist(),
            "kl_grades": list(self.kl_grades),
            "kl_frequencies": self.kl_frequencies.tolist(),
            "kl_score_means": self.kl_score_means.tolist(),
            "within_kl_covariance": self.within_kl_covariance.tolist(),
            "rotation_std_deg": self.rotation_std_deg,
            "kl_stats": self.kl_stats,
            "source": self.source,
        }

    @classmethod
    def from_json_dict(cls, data: dict) -> "ShapeModel":
        if data.get("format") != _FORMAT or data.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"not a {_FORMAT} v{_FORMAT_VERSION} file")
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float64),
            components=np.asarray(data["components"], dtype=np.float64),
            variances=np.asarray(data["variances"], dtype=np.float64),
            kl_grades=tuple(int(k) for k in data["kl_grades"]),
            kl_frequencies=np.asarray(data["kl_frequencies"], dtype=np.float64),
            kl_score_means=np.asarray(data["kl_score_means"], dtype=np.float64),
            within_kl_covariance=np.asarray(data["within_kl_covariance"], dtype=np.float64),
            rotation_std_deg=float(data["rotation_std_deg"]),
            kl_stats=dict(data.get("kl_stats", {})),
            source=dict(data.get("source", {})),
        )

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, json.dumps(self.to_json_dict(), indent=1) + "\n")


def aligned_csv_shapes(path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSV's knees in mm, centred on landmark 4: ``(raw, aligned, kl)``, both ``(N, 16, 2)``."""
    points, kl, _ = read_landmark_csv(path)
    raw = (points - points[:, 4:5, :]) * CSV_SPACING_MM
    aligned, _ = _align_rotations(raw)
    return raw, aligned, kl


def fit_shape_model(path: str | os.PathLike | None = None, *, variance_kept: float = 0.98) -> ShapeModel:
    """Fit the model to the annotation CSV (default: :func:`default_csv_path`)."""
    points, kl, sides = read_landmark_csv(path)
    raw = (points - points[:, 4:5, :]) * CSV_SPACING_MM
    aligned, angles = _align_rotations(raw)
    n = len(aligned)
    flat = aligned.reshape(n, -1)
    mean = flat.mean(axis=0)
    centred = flat - mean
    cov = centred.T @ centred / (n - 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    evals = np.clip(evals, 0.0, None)
    k = int(np.searchsorted(np.cumsum(evals) / evals.sum(), variance_kept) + 1)
    comps = evecs[:, :k].T.copy()
    # deterministic sign: the largest-magnitude entry of each component is positive
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    comps *= signs[:, None]
    scores = centred @ comps.T  # (N, K)

    grades = tuple(int(g) for g in sorted(set(kl.tolist())))
    freqs = np.array([(kl == g).mean() for g in grades])
    means = np.stack([scores[kl == g].mean(axis=0) for g in grades])
    resid = scores - means[[grades.index(int(g)) for g in kl]]
    within = resid.T @ resid / (n - len(grades))

    jsw = joint_space_widths_mm(aligned)
    stats = {}
    for g in grades:
        sel = aligned[kl == g]
        gj = jsw[kl == g]
        stats[str(g)] = {
            "n": int(len(sel)),
            "jsw_lateral_mm": [float(gj[:, 0].mean()), float(gj[:, 0].std(ddof=1))],
            "jsw_medial_mm": [float(gj[:, 1].mean()), float(gj[:, 1].std(ddof=1))],
            "tibia_width_mm": float((sel[:, 8, 0] - sel[:, 0, 0]).mean()),
            "femur_width_mm": float((sel[:, 15, 0] - sel[:, 9, 0]).mean()),
        }
    return ShapeModel(
        mean=mean.reshape(16, 2),
        components=comps,
        variances=evals[:k].copy(),
        kl_grades=grades,
        kl_frequencies=freqs,
        kl_score_means=means,
        within_kl_covariance=within,
        rotation_std_deg=float(np.degrees(angles.std(ddof=1))),
        kl_stats=stats,
        source={
            "data": "KNEEL OAI landmark annotations (kneel_oai_landmarks_0.3mm.csv), 0.3 mm/px",
            "n_knees": int(n),
            "n_left": int((sides == "L").sum()),
            "n_right": int((sides == "R").sum()),
            "variance_kept": variance_kept,
            "total_variance_mm2": float(evals.sum()),
            "alignment": "rotation-only Procrustes about landmark 4 (size kept)",
        },
    )


@lru_cache(maxsize=4)
def _load_cached(path: str) -> ShapeModel:
    with open(path) as fh:
        return ShapeModel.from_json_dict(json.load(fh))


def load_shape_model(path: str | os.PathLike | None = None) -> ShapeModel:
    """The shipped model (``shape_model.json`` in this package), or one saved elsewhere."""
    return _load_cached(str(Path(path) if path is not None else SHIPPED_MODEL_PATH))


def sample_knee_shape(
    rng: np.random.Generator,
    kl: int | None = None,
    *,
    model: ShapeModel | None = None,
    rotate: bool = False,
    max_sigma: float = 3.0,
) -> np.ndarray:
    """Draw one knee's 16 landmarks, ``(16, 2)`` mm, right-knee orientation, landmark 4 at the origin.

    ``kl`` None draws a grade with the CSV's frequencies. The grade's Gaussian is sampled as
    ``mu_kl + L z`` (``L L^T`` the within-grade covariance) with ``z`` re-drawn while any
    ``|z_i|`` exceeds ``max_sigma`` (no implausible extremes). The same ``rng`` state gives the
    same ``z`` for every grade, so changing only ``kl`` moves the shape by the grade's mean
    difference (e.g. medial joint-space narrowing). ``rotate=True`` adds a tilt drawn from the
    data's tilt spread (the generator does this itself, about the same origin).
    """
    model = model or load_shape_model()
    if kl is None:
        kl = int(rng.choice(np.asarray(model.kl_grades), p=model.kl_frequencies))
    chol = np.linalg.cholesky(model.within_kl_covariance)
    for _ in range(100):
        z = rng.standard_normal(model.n_components)
        if np.all(np.abs(z) <= max_sigma):
            break
    scores = model.kl_score_means[model.kl_index(int(kl))] + chol @ z
    shape = model.shape_from_scores(scores)
    shape[4] = 0.0  # exact: landmark 4 is the origin by construction (PCA keeps it at ~1e-15)
    if rotate:
        shape = rotate_shape(shape, np.radians(model.rotation_std_deg) * rng.standard_normal())
    return shape


def _main() -> None:  # pragma: no cover - maintenance entry point
    import argparse

    parser = argparse.ArgumentParser(description="Re-fit the shipped KNEEL shape model from the annotation CSV.")
    parser.add_argument("--csv", default=None, help="annotation CSV (default: the one shipped with the package)")
    parser.add_argument("--out", default=str(SHIPPED_MODEL_PATH))
    ns = parser.parse_args()
    model = fit_shape_model(ns.csv)
    print(f"wrote {model.save(ns.out)}: {model.n_components} components, rotation sd {model.rotation_std_deg:.2f} deg")


if __name__ == "__main__":  # pragma: no cover
    _main()
