"""Landmark localisation metrics of the KNEEL method (Tiulpin et al. 2019).

Conventions used throughout this module:

* Landmark coordinates are ``(x, y)`` pairs on the last axis, in **pixels** unless stated
  otherwise; a batch of knees is ``(K, M, 2)`` with ``K`` knees and ``M`` landmarks (``M = 16``
  for the full KNEEL annotation; columns are landmark ids, see :mod:`kneel_monai.landmarks`).
* Errors are Euclidean distances in **millimetres**, shape ``(K, M)``.
* Percentages (PCK, outlier rate) are in **%** (0-100), not fractions, and are not rounded.
* Every function accepts numpy arrays or torch tensors and returns numpy / Python values.

Missing landmarks: a ``NaN`` in a reference (target) coordinate gives a ``NaN`` error. ``NaN``
errors are *excluded* from every count: they are in neither the numerator nor the denominator
of a PCK or an outlier rate. In the release aggregation a knee's group error is ``NaN`` when any
landmark of that group is ``NaN``, so that knee is left out of that group's PCK only.
A quantity with nothing to count (no valid entries) is ``NaN``.

The release aggregation (:func:`release_aggregation`) follows the original KNEEL evaluation
code: per knee, the errors of the tibial landmarks of the evaluation subset are averaged, and so
are those of the femoral landmarks; PCK is computed for each of these two groups separately
(% of knees whose group error is <= r); the reported number is mean ± std over the two groups,
where std is the sample standard deviation (``ddof=1``, pandas ``DataFrame.std`` semantics).
Outliers are knees with *any* landmark error >= 10 mm, over all landmarks passed in (not only
those of the subset), as in the original code.
"""

from __future__ import annotations

import csv
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch
from monai.handlers import IgniteMetricHandler, from_engine
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

from kneel_monai.landmarks import (
    BONE_COLOURS,
    MODEL_SELECTION_SUBSET,
    TEST_SUBSET,
    bone_of,
)

__all__ = [
    "DEFAULT_RADII",
    "DEFAULT_OUTLIER_THRESHOLD_MM",
    "KL_GRADES",
    "SUBSETS",
    "SubsetSpec",
    "resolve_subset",
    "landmark_errors_mm",
    "pck",
    "outlier_rate",
    "release_group_errors",
    "release_aggregation",
    "per_kl_breakdown",
    "cumulative_error_distribution",
    "plot_ced",
    "format_table_markdown",
    "write_table_csv",
    "LandmarkErrorMetric",
    "LandmarkErrorHandler",
]

#: PCK radii of the paper's tables, in mm.
DEFAULT_RADII: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5)
#: A landmark at least this far (mm) from its reference is an outlier.
DEFAULT_OUTLIER_THRESHOLD_MM: float = 10.0
#: Kellgren-Lawrence grades reported by :func:`per_kl_breakdown`.
KL_GRADES: tuple[int, ...] = (0, 1, 2, 3, 4)

#: A subset: a name of :data:`SUBSETS` or ``(tibia_ids, femur_ids)``.
SubsetSpec = Union[str, Sequence[Sequence[int]]]


def _split_by_bone(ids: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return (
        tuple(i for i in ids if bone_of(i) == "tibia"),
        tuple(i for i in ids if bone_of(i) == "femur"),
    )


#: Named evaluation subsets as ``(tibia_ids, femur_ids)``:
#: ``"model_selection"`` = ((0, 8), (9, 15)), ``"test"`` = ((0, 4, 8), (9, 12, 15)).
SUBSETS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "model_selection": _split_by_bone(MODEL_SELECTION_SUBSET),
    "test": _split_by_bone(TEST_SUBSET),
}

_GROUP_NAMES = ("tibia", "femur")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _to_numpy(x: Any, name: str) -> np.ndarray:
    """float64 numpy array from an array-like or a torch tensor (no copy when already float64)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric array-like, got {type(x).__name__}: {e}") from e


def _as_2d_errors(errors_mm: Any, name: str = "errors_mm") -> np.ndarray:
    """``(K, M)`` float array; a 1-D ``(K,)`` input is one error per knee, i.e. ``(K, 1)``."""
    e = _to_numpy(errors_mm, name)
    if e.ndim == 1:
        e = e[:, None]
    if e.ndim != 2:
        raise ValueError(f"{name} must have shape (K, M) (or (K,)), got shape {e.shape}")
    return e


def _radii_tuple(radii: Any) -> tuple[float, ...]:
    if isinstance(radii, (int, float)):
        radii = (radii,)
    r = tuple(float(v) for v in radii)
    if len(r) == 0:
        raise ValueError("radii must contain at least one radius (mm)")
    if any(not math.isfinite(v) or v < 0 for v in r):
        raise ValueError(f"radii must be finite and >= 0 mm, got {r}")
    return r


def _sample_std(values: Sequence[float]) -> float:
    """Sample std (``ddof=1``), ``NaN`` when fewer than 2 values (as pandas)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float("nan")
    return float(np.sqrt(np.sum((v - v.mean()) ** 2) / (v.size - 1)))


def resolve_subset(subset: SubsetSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Resolve a subset to ``(tibia_ids, femur_ids)``.

    Args:
        subset: ``"model_selection"`` (tibia (0, 8), femur (9, 15)), ``"test"`` (tibia
            (0, 4, 8), femur (9, 12, 15)), or a pair ``(tibia_ids, femur_ids)`` of non-empty id
            sequences; every id of the first must be a tibial landmark (0-8) and every id of the
            second a femoral one (9-15).

    Raises:
        ValueError: unknown name, malformed pair, or ids on the wrong bone.
    """
    if isinstance(subset, str):
        try:
            return SUBSETS[subset]
        except KeyError:
            raise ValueError(f"unknown subset {subset!r}; expected one of {sorted(SUBSETS)} "
                             "or a pair (tibia_ids, femur_ids)") from None
    try:
        groups = [tuple(int(i) for i in g) for g in subset]
    except TypeError:
        raise ValueError(f"subset must be a name or a pair (tibia_ids, femur_ids), got {subset!r}") from None
    if len(groups) != 2 or any(len(g) == 0 for g in groups):
        raise ValueError(
            f"subset must be a pair of non-empty id sequences (tibia_ids, femur_ids), got {subset!r}"
        )
    for group, bone in zip(groups, _GROUP_NAMES):
        for i in group:
            if bone_of(i) != bone:  # also range-checks the id
                raise ValueError(
                    f"landmark {i} in the {bone} group of subset {subset!r} is a {bone_of(i)} landmark"
                )
    return groups[0], groups[1]


# --------------------------------------------------------------------------------------------
# plain numpy metrics
# --------------------------------------------------------------------------------------------
def landmark_errors_mm(pred_px: Any, target_px: Any, spacing_mm: Any) -> np.ndarray:
    """Euclidean landmark errors in millimetres.

    Args:
        pred_px: predicted landmarks, shape ``(K, M, 2)``, ``(x, y)`` in pixels.
        target_px: reference landmarks, shape ``(K, M, 2)``, ``(x, y)`` in pixels. ``NaN``
            marks a missing landmark.
        spacing_mm: pixel spacing in mm per pixel: a scalar (all knees), shape ``(K,)`` (one
            isotropic spacing per knee) or ``(K, 2)`` (per knee ``(x, y)`` spacing).

    Returns:
        ``(K, M)`` float64 array of errors in mm,
        ``sqrt((dx * sx) ** 2 + (dy * sy) ** 2)``. ``NaN`` in either input gives ``NaN``;
        the other functions of this module exclude ``NaN`` errors from their counts.

    Raises:
        ValueError: when shapes do not match; the message names the shapes.
    """
    pred = _to_numpy(pred_px, "pred_px")
    target = _to_numpy(target_px, "target_px")
    if pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred_px must have shape (K, M, 2), got shape {pred.shape}")
    if target.shape != pred.shape:
        raise ValueError(
            f"pred_px and target_px shapes differ: pred_px shape {pred.shape}, target_px shape {target.shape}"
        )
    k = pred.shape[0]
    spacing = _to_numpy(spacing_mm, "spacing_mm")
    if spacing.ndim == 0:
        scale = np.broadcast_to(spacing, (k, 1, 2))
    elif spacing.shape == (k,):
        scale = np.broadcast_to(spacing[:, None, None], (k, 1, 2))
    elif spacing.shape == (k, 2):
        scale = spacing[:, None, :]
    else:
        raise ValueError(
            f"spacing_mm must be a scalar, shape ({k},) or ({k}, 2) for pred_px shape {pred.shape}, "
            f"got shape {spacing.shape}"
        )
    if np.any(~np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"spacing_mm must be finite and > 0, got {spacing}")
    diff_mm = (pred - target) * scale
    return np.sqrt(np.sum(diff_mm**2, axis=-1))


def pck(errors_mm: Any, radii: Any = DEFAULT_RADII) -> dict[float, float]:
    """Percentage of correct keypoints: % of entries with error ``<= r`` for each radius ``r``.

    Args:
        errors_mm: errors in mm of any shape (e.g. ``(K, M)`` landmarks or ``(K,)`` knees); all
            entries are pooled. ``NaN`` entries are excluded from numerator and denominator.
        radii: radii in mm (a number or a sequence).

    Returns:
        ``{float(r): percent}`` in %; ``NaN`` for every radius when there is no valid entry.
    """
    e = _to_numpy(errors_mm, "errors_mm").ravel()
    e = e[~np.isnan(e)]
    out: dict[float, float] = {}
    for r in _radii_tuple(radii):
        out[r] = float(100.0 * np.count_nonzero(e <= r) / e.size) if e.size else float("nan")
    return out


def outlier_rate(errors_mm: Any, threshold_mm: float = DEFAULT_OUTLIER_THRESHOLD_MM) -> float:
    """% of knees (rows) with at least one landmark error ``>= threshold_mm``.

    Args:
        errors_mm: ``(K, M)`` errors in mm (a ``(K,)`` input is one error per knee).
        threshold_mm: outlier threshold in mm (inclusive).

    Returns:
        Percentage in %. ``NaN`` errors are never outliers; knees whose errors are all ``NaN``
        are left out of the denominator; ``NaN`` when no knee has a valid error.
    """
    e = _as_2d_errors(errors_mm)
    valid_rows = ~np.all(np.isnan(e), axis=1)
    n = int(np.count_nonzero(valid_rows))
    if n == 0:
        return float("nan")
    with np.errstate(invalid="ignore"):
        is_out = np.any(e >= threshold_mm, axis=1)
    return float(100.0 * np.count_nonzero(is_out & valid_rows) / n)


def release_group_errors(errors_mm: Any, subset: SubsetSpec = "model_selection") -> dict[str, np.ndarray]:
    """Per-knee group errors of the release aggregation.

    Args:
        errors_mm: ``(K, M)`` errors in mm whose columns are landmark ids (``M`` > largest id used).
        subset: see :func:`resolve_subset`.

    Returns:
        ``{"tibia": (K,), "femur": (K,)}``: the mean error (mm) over the group's landmarks, per
        knee; ``NaN`` for a knee with any ``NaN`` landmark in that group. Suitable input for
        :func:`plot_ced`.
    """
    e = _as_2d_errors(errors_mm)
    tibia, femur = resolve_subset(subset)
    needed = max(tibia + femur) + 1
    if e.shape[1] < needed:
        raise ValueError(
            f"errors_mm has shape {e.shape} but subset {subset!r} uses landmark id {needed - 1}; "
            f"expected shape (K, M) with M >= {needed}"
        )
    return {name: e[:, list(ids)].mean(axis=1) for name, ids in zip(_GROUP_NAMES, (tibia, femur))}


def _aggregate_groups(
    groups: Mapping[str, np.ndarray],
    all_errors: np.ndarray,
    radii: tuple[float, ...],
    outlier_threshold_mm: float,
) -> dict[str, Any]:
    per_group = {name: pck(g, radii) for name, g in groups.items()}
    mean = {r: float(np.mean([per_group[n][r] for n in groups])) for r in radii}
    std = {r: _sample_std([per_group[n][r] for n in groups]) for r in radii}
    return {
        "n_knees": int(all_errors.shape[0]),
        "n_valid": {name: int(np.count_nonzero(~np.isnan(g))) for name, g in groups.items()},
        "pck": per_group,
        "mean": mean,
        "std": std,
        "outliers": outlier_rate(all_errors, outlier_threshold_mm),
    }


def release_aggregation(
    errors_mm: Any,
    subset: SubsetSpec = "model_selection",
    radii: Any = DEFAULT_RADII,
    outlier_threshold_mm: float = DEFAULT_OUTLIER_THRESHOLD_MM,
) -> dict[str, Any]:
    """KNEEL release aggregation: per-group PCK, mean ± std over the groups, outlier rate.

    Args:
        errors_mm: ``(K, M)`` errors in mm, columns are landmark ids (normally ``M = 16``).
        subset: ``"model_selection"``, ``"test"`` or ``(tibia_ids, femur_ids)``
            (see :func:`resolve_subset`).
        radii: PCK radii in mm.
        outlier_threshold_mm: outlier threshold in mm; outliers are computed over **all** ``M``
            landmarks given, not only the subset (as the original code does).

    Returns:
        A dict (all percentages in %)::

            {
              "subset": (tibia_ids, femur_ids),
              "n_knees": K,
              "n_valid": {"tibia": n, "femur": n},        # knees counted per group
              "pck": {"tibia": {r: %}, "femur": {r: %}},  # per-group PCK
              "mean": {r: %},                             # mean over the two groups
              "std": {r: %},                              # sample std (ddof=1) over the groups
              "outliers": %,                              # % knees with any landmark >= threshold
            }

        With ``K = 0`` every value is ``NaN``.
    """
    e = _as_2d_errors(errors_mm)
    groups = release_group_errors(e, subset)
    res = _aggregate_groups(groups, e, _radii_tuple(radii), outlier_threshold_mm)
    return {"subset": resolve_subset(subset), **res}


def per_kl_breakdown(
    errors_mm: Any,
    kl_grades: Any,
    subset: SubsetSpec = "model_selection",
    radii: Any = DEFAULT_RADII,
    outlier_threshold_mm: float = DEFAULT_OUTLIER_THRESHOLD_MM,
    grades: Sequence[int] = KL_GRADES,
) -> list[dict[str, Any]]:
    """Release aggregation separately for each Kellgren-Lawrence grade.

    Args:
        errors_mm: ``(K, M)`` errors in mm.
        kl_grades: ``(K,)`` KL grade per knee. Knees whose grade is not in ``grades`` (e.g. a
            missing grade coded as ``NaN`` or ``-1``) are in no row.
        subset, radii, outlier_threshold_mm: as :func:`release_aggregation`.
        grades: the grades to report, in order (default 0-4).

    Returns:
        One row per grade of ``grades``, **always**, also for grades without knees: each row is
        the :func:`release_aggregation` dict plus ``"setting": "KL<g>"`` and ``"kl_grade": g``.
        A grade without knees has ``n_knees == 0`` and ``NaN`` metrics (the table helpers print
        it as ``n/a``), so tables keep the paper's KL0-KL4 layout.
    """
    e = _as_2d_errors(errors_mm)
    kl = _to_numpy(kl_grades, "kl_grades")
    if kl.shape != (e.shape[0],):
        raise ValueError(
            f"kl_grades must have shape ({e.shape[0]},) to match errors_mm shape {e.shape}, "
            f"got shape {kl.shape}"
        )
    rows = []
    for g in grades:
        res = release_aggregation(e[kl == g], subset, radii, outlier_threshold_mm)
        rows.append({"setting": f"KL{int(g)}", "kl_grade": int(g), **res})
    return rows


# --------------------------------------------------------------------------------------------
# cumulative error distribution
# --------------------------------------------------------------------------------------------
def cumulative_error_distribution(errors_mm: Any, thresholds_mm: Any) -> np.ndarray:
    """% of (non-``NaN``) entries with error ``<= t`` for each threshold ``t`` (mm).

    Args:
        errors_mm: errors in mm, any shape (pooled).
        thresholds_mm: ``(T,)`` thresholds in mm.

    Returns:
        ``(T,)`` percentages in %; all ``NaN`` when there is no valid entry.
    """
    e = _to_numpy(errors_mm, "errors_mm").ravel()
    e = np.sort(e[~np.isnan(e)])
    t = _to_numpy(thresholds_mm, "thresholds_mm").ravel()
    if e.size == 0:
        return np.full(t.shape, np.nan)
    return 100.0 * np.searchsorted(e, t, side="right") / e.size


def plot_ced(
    errors_by_label: Mapping[str, Any],
    path: str | os.PathLike,
    max_error_mm: float = 10.0,
    title: str | None = None,
    ylabel: str = "% of knees",
    n_points: int = 1001,
    dpi: int = 100,
) -> str | os.PathLike:
    """Cumulative error distribution plot saved as a PNG (matplotlib Agg, nothing is shown).

    Args:
        errors_by_label: ``{label: errors_mm}``, one curve per label (e.g. the output of
            :func:`release_group_errors`: ``{"tibia": (K,), "femur": (K,)}``, or one array per
            setting). Each array is pooled; ``NaN`` entries are excluded. Labels ``"tibia"`` and
            ``"femur"`` (any case) use the paper's bone colours.
        path: output PNG path (the parent folder must exist).
        max_error_mm: x-axis upper limit in mm.
        title: optional title.
        ylabel: y-axis label (use ``"% of landmarks"`` for per-landmark errors).
        n_points: samples of the curve on ``[0, max_error_mm]``.
        dpi: resolution of the PNG.

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not errors_by_label:
        raise ValueError("errors_by_label must contain at least one curve")
    if not max_error_mm > 0:
        raise ValueError(f"max_error_mm must be > 0, got {max_error_mm}")
    x = np.linspace(0.0, float(max_error_mm), int(n_points))
    fig = Figure(figsize=(6, 4.5), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, errors in errors_by_label.items():
        colour = BONE_COLOURS.get(str(label).lower())
        ax.plot(x, cumulative_error_distribution(errors, x), label=str(label), color=colour, linewidth=2)
    ax.set_xlim(0.0, float(max_error_mm))
    ax.set_ylim(0.0, 100.0)
    ax.set_xlabel("Error (mm)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title("\n".join(textwrap.wrap(title, 60)))  # long titles wrap instead of being cut
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------
def _table_rows(results: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """``[(setting, aggregation_dict)]`` from a mapping or a sequence of rows with "setting"."""
    if isinstance(results, Mapping):
        if "mean" in results and "std" in results:  # a single aggregation dict
            return [(str(results.get("setting", "all")), results)]
        return [(str(k), v) for k, v in results.items()]
    rows = []
    for row in results:
        if "setting" not in row:
            raise ValueError("each row of a sequence of results needs a 'setting' key")
        rows.append((str(row["setting"]), row))
    return rows


def _fmt(v: float, decimals: int) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{decimals}f}"


def _pck_cell(mean: float, std: float, decimals: int) -> str:
    """``"m ± s"``; just ``"m"`` when std is undefined (one group); ``"n/a"`` without a mean."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if std is None or not math.isfinite(std):
        return _fmt(mean, decimals)
    return f"{_fmt(mean, decimals)} ± {_fmt(std, decimals)}"


def _radius_label(r: float) -> str:
    return f"{r:g} mm"


def format_table_markdown(results: Any, radii: Any = None, decimals: int = 2) -> str:
    """A Markdown table like the paper's: ``| setting | 1 mm | 1.5 mm | 2 mm | 2.5 mm | % out |``.

    Args:
        results: ``{setting: aggregation}`` (aggregations from :func:`release_aggregation` or
            :meth:`LandmarkErrorMetric.aggregate` with ``aggregation="all"``), a single
            aggregation, or a sequence of rows each holding a ``"setting"`` key (e.g. the
            output of :func:`per_kl_breakdown`).
        radii: radii (mm) to show; default: those of the first row.
        decimals: decimals of the printed percentages.

    Returns:
        The table; PCK cells read ``mean ± std`` (in %; only ``mean`` when the std is undefined,
        i.e. a single group), the last column the outlier %; a ``NaN`` value (e.g. a KL grade
        without knees) prints as ``n/a``.
    """
    rows = _table_rows(results)
    if not rows:
        raise ValueError("results is empty")
    rs = _radii_tuple(radii) if radii is not None else tuple(rows[0][1]["mean"])
    lines = [
        "| setting | " + " | ".join(_radius_label(r) for r in rs) + " | % out |",
        "|---|" + "---|" * len(rs) + "---|",
    ]
    for setting, res in rows:
        cells = [_pck_cell(res["mean"][r], res["std"][r], decimals) for r in rs]
        lines.append(f"| {setting} | " + " | ".join(cells) + f" | {_fmt(res['outliers'], decimals)} |")
    return "\n".join(lines) + "\n"


def write_table_csv(results: Any, path: str | os.PathLike, radii: Any = None) -> str | os.PathLike:
    """Write the settings × radii table as CSV (full precision, ``NaN`` written as ``nan``).

    Columns: ``setting, n_knees, <r> mm mean, <r> mm std`` for each radius, then
    ``<group> <r> mm`` per group (e.g. ``tibia 1 mm``) for each radius, then ``% out``.

    Args:
        results: as :func:`format_table_markdown`.
        path: output CSV path.
        radii: radii (mm); default: those of the first row.

    Returns:
        ``path``.
    """
    rows = _table_rows(results)
    if not rows:
        raise ValueError("results is empty")
    rs = _radii_tuple(radii) if radii is not None else tuple(rows[0][1]["mean"])
    groups: list[str] = []
    for _, res in rows:
        for g in res.get("pck", {}):
            if g not in groups:
                groups.append(g)
    header = ["setting", "n_knees"]
    header += [f"{_radius_label(r)} {stat}" for r in rs for stat in ("mean", "std")]
    header += [f"{g} {_radius_label(r)}" for g in groups for r in rs]
    header += ["% out"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for setting, res in rows:
            line: list[Any] = [setting, res.get("n_knees", "")]
            line += [repr(float(res[stat][r])) for r in rs for stat in ("mean", "std")]
            line += [
                repr(float(res["pck"][g][r])) if g in res.get("pck", {}) else "" for g in groups for r in rs
            ]
            line += [repr(float(res["outliers"]))]
            w.writerow(line)
    return path


# --------------------------------------------------------------------------------------------
# MONAI metric and handler
# --------------------------------------------------------------------------------------------
# "pck_then_error": mean error (mm) / this is subtracted from the PCK (%) to break ties
TIEBREAK_MM_PER_PERCENT = 1000.0

class LandmarkErrorMetric(CumulativeIterationMetric):
    """Per-landmark error (mm) accumulated over iterations, aggregated as PCK / release metrics.

    Input ``y_pred`` and ``y`` are landmark coordinates ``(x, y)``: a batch-first tensor
    ``(B, M, 2)`` or a list of ``(M, 2)`` tensors (MONAI's decollated form). Each call buffers
    ``(B, M)`` errors in mm; :meth:`aggregate` computes from the whole buffer.

    Args:
        spacing_mm: scalar mm per pixel of the coordinates received (after ``image_size``
            scaling when given).
        image_size: ``(H, W)`` when coordinates are normalised to ``[0, 1]``; then
            ``x_px = x * W`` and ``y_px = y * H``. ``None``: coordinates are pixels.
        radii: PCK radii in mm reported by ``aggregation="all"``.
        subset: ``None`` (all ``M`` landmarks pooled as one group named ``"all"``; its std is
            ``NaN``), or a release subset (``"model_selection"``, ``"test"``, or
            ``(tibia_ids, femur_ids)``) aggregated as :func:`release_aggregation`.
        aggregation: default of :meth:`aggregate`: ``"pck_mean"`` (a float: mean PCK in % over
            the groups at ``key_radius``; higher is better, suitable as a key metric for
            best-checkpoint selection), ``"pck_then_error"`` (the same PCK minus the mean error
            in mm over *all* landmarks / 1000: a PCK step — at least 100/(2·knees) % — always
            outweighs the error term (< 0.1 while errors stay under 100 mm), so the error only
            breaks ties, e.g. once validation PCK saturates at 100 %), ``"all"`` (the
            :func:`release_aggregation` dict) or ``"error"`` (MONAI-style reduction of the
            buffered errors in mm with ``reduction``).
        key_radius: radius (mm) of ``"pck_mean"``; default 2.5 mm.
        outlier_threshold_mm: outlier threshold (mm) of ``"all"``.
        reduction: MONAI reduction for ``aggregation="error"`` (``"mean"``, ``"none"``,
            ``"mean_batch"``...; ``NaN`` errors are skipped as in MONAI).
        get_not_nans: with ``aggregation="error"``, return ``(value, not_nans)``.

    Example::

        metric = LandmarkErrorMetric(spacing_mm=0.3, subset="model_selection")
        for batch in loader:
            metric(y_pred=model(batch["image"]), y=batch["label"])   # (B, 16, 2) pixels
        best = metric.aggregate()            # float, % at 2.5 mm
        table = metric.aggregate("all")      # dict, see release_aggregation
        metric.reset()
    """

    _AGGREGATIONS = ("pck_mean", "pck_then_error", "all", "error")

    def __init__(
        self,
        spacing_mm: float = 1.0,
        image_size: Sequence[int] | None = None,
        radii: Any = DEFAULT_RADII,
        subset: SubsetSpec | None = None,
        aggregation: str = "pck_mean",
        key_radius: float = 2.5,
        outlier_threshold_mm: float = DEFAULT_OUTLIER_THRESHOLD_MM,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__()
        spacing = _to_numpy(spacing_mm, "spacing_mm")
        if spacing.ndim != 0 or not np.isfinite(spacing) or spacing <= 0:
            raise ValueError(f"spacing_mm must be a finite scalar > 0, got {spacing_mm!r}")
        self.spacing_mm = float(spacing)
        if image_size is not None:
            size = tuple(float(s) for s in image_size)
            if len(size) != 2 or any(s <= 0 for s in size):
                raise ValueError(f"image_size must be (H, W) with positive sizes, got {image_size!r}")
            image_size = size
        self.image_size = image_size
        self.radii = _radii_tuple(radii)
        if subset is not None:
            resolve_subset(subset)  # validate early
        self.subset = subset
        if aggregation not in self._AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {self._AGGREGATIONS}, got {aggregation!r}")
        self.aggregation = aggregation
        self.key_radius = _radii_tuple((key_radius,))[0]
        self.outlier_threshold_mm = float(outlier_threshold_mm)
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """``(B, M, 2)`` predictions and references → ``(B, M)`` errors in mm (``NaN`` propagates)."""
        if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ValueError("y_pred and y must be PyTorch Tensors of shape (B, M, 2).")
        if y_pred.ndim != 3 or y_pred.shape[-1] != 2:
            raise ValueError(f"y_pred must have shape (B, M, 2), got shape {tuple(y_pred.shape)}")
        if y.shape != y_pred.shape:
            raise ValueError(
                f"y_pred and y shapes differ: y_pred shape {tuple(y_pred.shape)}, y shape {tuple(y.shape)}"
            )
        dtype = y_pred.dtype if y_pred.is_floating_point() else torch.float32
        diff = y_pred.to(dtype) - y.to(device=y_pred.device, dtype=dtype)
        if self.image_size is not None:
            h, w = self.image_size
            diff = diff * torch.tensor([w, h], dtype=dtype, device=diff.device)
        return torch.linalg.vector_norm(diff * self.spacing_mm, dim=-1)

    def _buffer_tensor(self) -> torch.Tensor:
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the buffer is empty: call the metric on at least one batch before aggregate().")
        return data

    def _errors(self) -> np.ndarray:
        return self._buffer_tensor().detach().cpu().numpy().astype(np.float64)

    def _aggregate_dict(self, errors: np.ndarray, radii: tuple[float, ...]) -> dict[str, Any]:
        if self.subset is None:
            res = _aggregate_groups({"all": errors}, errors, radii, self.outlier_threshold_mm)
            return {"subset": None, **res}
        return release_aggregation(errors, self.subset, radii, self.outlier_threshold_mm)

    def aggregate(  # type: ignore[override]
        self, aggregation: str | None = None, reduction: MetricReduction | str | None = None
    ) -> Any:
        """Aggregate the buffered errors.

        Args:
            aggregation: overrides the constructor's ``aggregation`` for this call.
            reduction: overrides ``reduction`` (``aggregation="error"`` only).

        Returns:
            ``"pck_mean"``/``"pck_then_error"``: float (%); ``"all"``: dict as :func:`release_aggregation` (subset
            ``None``: one group ``"all"``); ``"error"``: tensor in mm (or ``(tensor, not_nans)``).
        """
        agg = aggregation or self.aggregation
        if agg not in self._AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {self._AGGREGATIONS}, got {agg!r}")
        if agg == "error":
            f, not_nans = do_metric_reduction(self._buffer_tensor(), reduction or self.reduction)
            return (f, not_nans) if self.get_not_nans else f
        errors = self._errors()
        if agg in ("pck_mean", "pck_then_error"):
            pck = float(self._aggregate_dict(errors, (self.key_radius,))["mean"][self.key_radius])
            if agg == "pck_then_error":
                pck -= float(np.nanmean(errors)) / TIEBREAK_MM_PER_PERCENT
            return pck
        return self._aggregate_dict(errors, self.radii)


class LandmarkErrorHandler(IgniteMetricHandler):
    """Ignite/MONAI handler computing :class:`LandmarkErrorMetric` in an evaluator.

    Use it in ``key_val_metric`` of ``monai.engines.SupervisedEvaluator`` (best-checkpoint
    selection with the default ``aggregation="pck_mean"``, higher is better) or
    ``additional_metrics``. ``engine.state.metric_details[name]`` receives the ``(N, M)`` errors
    in mm when ``save_details`` is true.

    Args:
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``; default
            ``monai.handlers.from_engine(["pred", "label"])``, which suits MONAI's supervised
            engines with or without decollation. ``None`` means the same default.
        save_details: store the per-landmark errors in ``engine.state.metric_details``.
        **metric_kwargs: arguments of :class:`LandmarkErrorMetric`. With ``aggregation="all"``
            the dict result is also flattened into ``engine.state.metrics`` by ignite (keys
            ``"pck"``, ``"mean"``...), so prefer ``"pck_mean"`` inside an engine.
    """

    def __init__(self, output_transform: Any = None, save_details: bool = True, **metric_kwargs: Any) -> None:
        if output_transform is None:
            output_transform = from_engine(["pred", "label"])
        super().__init__(
            metric_fn=LandmarkErrorMetric(**metric_kwargs),
            output_transform=output_transform,
            save_details=save_details,
        )
