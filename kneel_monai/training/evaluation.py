"""Evaluate trained models the way the paper reports them (method.md §5).

* :func:`evaluate_model` — one stage's model on a datalist (a cross-validation fold or every
  item): the evaluation chain of that stage, predictions mapped back to the radiograph's pixels,
  errors in millimetres against the datalist's ground truth.
* :func:`evaluate_pipeline` — the full two-stage pipeline (:class:`~kneel_monai.inference.KneelPredictor`)
  on whole radiographs, against the landmarks of each image's knees.

Both write into ``output_dir``: ``pck_<subset>.csv`` / ``.md`` (PCK@1/1.5/2/2.5 mm mean ± std over
the tibia and femur groups and % outliers; rows: all knees, then KL0–KL4) for the model-selection
subset (0, 8, 9, 15) and the test subset (0, 4, 8, 9, 12, 15), ``ced_<subset>.png`` (cumulative
error distribution per bone group), ``errors.csv`` (per knee and landmark, mm),
``metrics.json`` and ``report.md``. The ROI model (one point, the knee centre) gets one table,
``pck_roi``, over that point.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write, atomic_write_text
from ..data.datalists import read_datalist, split_folds
from ..inference import resolve_device
from ..landmarks import NUM_LANDMARKS, SIDES
from ..metrics import (
    DEFAULT_RADII,
    KL_GRADES,
    format_table_markdown,
    landmark_errors_mm,
    outlier_rate,
    pck,
    per_kl_breakdown,
    plot_ced,
    release_aggregation,
    release_group_errors,
    write_table_csv,
)
from ..model_io import KneelModel, load_model
from ..transforms import points_between
from ..transforms.array import pixel_spacing
from .stages import StageConfig, stage_config, stage_transforms

__all__ = ["SUBSET_TITLES", "stage_of_model", "evaluate_model", "model_errors", "evaluate_pipeline",
           "write_evaluation_report"]

SUBSET_TITLES = {"model_selection": "model selection subset (0, 8, 9, 15)",
                 "test": "test subset (0, 4, 8, 9, 12, 15)"}


# ---------------------------------------------------------------------------------------------
# geometry and network input
# ---------------------------------------------------------------------------------------------
def stage_of_model(model: KneelModel, stage: str | StageConfig | None = None) -> StageConfig:
    """The evaluation geometry of ``model``: from its ``model.json`` preprocessing, or ``stage`` checked against it.

    A model evaluated at another spacing or crop than it was trained for gives meaningless
    numbers, so a ``stage`` that disagrees with the model file is an error.
    """
    pre = model.preprocessing
    derived = StageConfig.from_preprocessing(
        model.task, pre, out_points=int(model.networks[0].out_points),
        subset="model_selection" if model.task == "landmarks" else None,
        key_radius_mm=2.5 if model.task == "landmarks" else 10.0)
    if stage is None:
        return derived
    cfg = stage_config(stage) if isinstance(stage, str) else stage
    where = f"{model.path}" if model.path is not None else "the model"
    if cfg.task != model.task:
        raise ValueError(f"{where} is a {model.task!r} model; stage {stage!r} is for {cfg.task!r} models")
    differ = derived.differences(cfg)  # "<field> <model's> vs <stage's>"
    if differ:
        raise ValueError(f"{where} was trained for another geometry than stage {stage!r}: {'; '.join(differ)}. "
                         "Leave the stage out to evaluate at the model's own geometry.")
    return replace(derived, subset=cfg.subset, key_radius_mm=cfg.key_radius_mm)


def _all_items(fold: Any) -> bool:
    """``None`` or ``"all"`` selects every item (a bundle override cannot pass ``None``)."""
    return fold is None or (isinstance(fold, str) and fold.strip().lower() in ("all", "none", ""))


def _select(items: list[dict], fold: int | str | None, source: Any) -> list[dict]:
    if _all_items(fold):
        chosen = list(items)
    else:
        try:
            fold = int(fold)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"fold must be a fold number or 'all', got {fold!r}") from None
        chosen = split_folds(items, fold)[1]
    if not chosen:
        where = "all items" if _all_items(fold) else f"validation fold {fold}"
        raise ValueError(f"{source}: {where} leaves nothing to evaluate")
    return chosen


# ---------------------------------------------------------------------------------------------
# one stage
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_model(model_dir: str | os.PathLike, datalist: str | os.PathLike, output_dir: str | os.PathLike,
                   fold: int | str | None = None, stage: str | StageConfig | None = None,
                   device: str | torch.device = "cpu", batch_size: int = 8, max_items: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Evaluate one stage's model on a datalist and write the paper's tables and CED plots.

    Args:
        model_dir: a project model directory (``model.json`` + fold weights; several folds are
            averaged as at inference).
        datalist: a datalist of the model's stage (``landmark_datalist.json`` for a landmark
            model, ``roi_datalist.json`` for an ROI model).
        output_dir: where the tables, plots and ``metrics.json`` go.
        fold: evaluate the items of this cross-validation fold (the model trained on the
            others); ``None`` or ``"all"``: every item (an independent test set).
        stage: a stage name or :class:`StageConfig` to check against the model's geometry;
            ``None`` takes the geometry from ``model.json``.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a ``torch.device``.
        max_items: evaluate at most this many datalist items (quick checks).

    Returns:
        The summary written to ``metrics.json`` (see :func:`write_evaluation_report`).

    Errors are Euclidean distances in mm between the prediction, mapped back to the original
    radiograph with ``points_between(p, d["image"].affine, d["image_original_affine"])``, and
    the datalist's landmarks, with the radiograph's own pixel spacing.
    """
    errors, records, cfg, n_networks = model_errors(model_dir, datalist, fold=fold, stage=stage, device=device,
                                                    batch_size=batch_size, max_items=max_items, progress=progress)
    context = {"kind": "model", "task": cfg.task, "model_dir": str(model_dir), "datalist": str(datalist),
               "fold": fold, "geometry": {"spacing_mm": cfg.spacing_mm, "pad_size": cfg.pad_size,
                                          "crop_size": cfg.crop_size},
               "n_folds_in_model": n_networks}
    fold = None if _all_items(fold) else int(fold)  # type: ignore[arg-type]
    title = f"{cfg.task} model, {'fold ' + str(fold) if fold is not None else 'all items'}"
    return write_evaluation_report(errors, records, output_dir, title=title, context=context)


def model_errors(model_dir: str | os.PathLike, datalist: str | os.PathLike, fold: int | str | None = None,
                 stage: str | StageConfig | None = None, device: str | torch.device = "cpu", batch_size: int = 8,
                 max_items: int | None = None, progress: bool = True
                 ) -> tuple[np.ndarray, list[dict[str, Any]], StageConfig, int]:
    """Errors in mm ``(K, M)`` of one stage's model on a datalist's items, with one record per knee.

    Returns ``(errors, records, stage config, number of fold networks in the model)``; the
    arguments are those of :func:`evaluate_model`.
    """
    device = resolve_device(device)
    model = load_model(model_dir, device)
    cfg = stage_of_model(model, stage)
    data = read_datalist(datalist)
    if data["stage"] != cfg.task:
        raise ValueError(f"{datalist}: a {data['stage']!r} datalist given to a {cfg.task!r} model ({model_dir})")
    items = _select(data["items"], fold, datalist)[: max_items if max_items else None]
    chain = stage_transforms(cfg, train=False)
    offset = model.pixel_offset

    errors: list[np.ndarray] = []
    records: list[dict[str, Any]] = []
    pending: list[tuple[dict, np.ndarray, dict]] = []  # (sample, ground truth px, record)

    def flush() -> None:
        if not pending:
            return
        x = model.network_input([s["image"] for s, _, _ in pending], device)
        coords = model.predict(x).double().cpu().numpy()
        h, w = x.shape[-2:]
        for (sample, truth, record), c in zip(pending, coords):
            pred_crop = c * np.array([w, h]) - offset
            pred = points_between(pred_crop, sample["image"].affine, sample["image_original_affine"])
            spacing = np.array(pixel_spacing(torch.as_tensor(sample["image_original_affine"],
                                                             dtype=torch.float64))[::-1])  # (x, y)
            errors.append(landmark_errors_mm(pred[None], truth[None], spacing[None])[0])
            records.append(record)
        pending.clear()

    for n, item in enumerate(items):
        out = chain(item)
        samples = out if isinstance(out, list) else [out]
        for sample in samples:
            side = sample.get("side", item.get("side"))
            if cfg.task == "roi":
                centre = item["knee_centres_px"].get(side)
                if centre is None:  # no knee on this half: nothing to measure
                    continue
                truth = np.asarray([centre], dtype=np.float64)
                kl = (item.get("kl") or {}).get(side)
            else:
                truth = np.asarray(item["landmarks_px"], dtype=np.float64)
                kl = item.get("kl")
            record = {"image": item["image"], "side": side, "subject_id": item.get("subject_id", ""),
                      "kl": -1 if kl is None else int(kl), "fold": item.get("fold", "")}
            pending.append((sample, truth, record))
        if len(pending) >= batch_size:
            flush()
        if progress and (n + 1) % 50 == 0:
            print(f"evaluated {n + 1}/{len(items)} items", flush=True)
    flush()
    if not errors:
        raise ValueError(f"{datalist}: no knee with ground truth among the selected items")
    return np.stack(errors), records, cfg, len(model.networks)


# ---------------------------------------------------------------------------------------------
# the full pipeline
# ---------------------------------------------------------------------------------------------
def _truth_by_image(landmark_items: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, tuple[np.ndarray, Any]]]:
    truth: dict[str, dict[str, tuple[np.ndarray, Any]]] = {}
    for item in landmark_items:
        truth.setdefault(str(item["image"]), {})[item["side"]] = (np.asarray(item["landmarks_px"], float),
                                                                  item.get("kl"))
    return truth


def evaluate_pipeline(predictor: Any, datalist: str | os.PathLike, output_dir: str | os.PathLike,
                      fold: int | str | None = None, landmark_datalist: str | os.PathLike | None = None,
                      max_items: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate the two-stage pipeline on whole radiographs and write the tables and CED plots.

    Args:
        predictor: a :class:`~kneel_monai.inference.KneelPredictor` (refinement as configured).
        datalist: a radiograph-level ``roi_datalist.json`` (or a ``landmark_datalist.json``,
            whose items are then grouped by image).
        fold: only the radiographs of this fold; ``None`` or ``"all"``: all (an independent test set).
        landmark_datalist: where the 16 reference landmarks of each knee come from; default the
            ``landmark_datalist.json`` beside ``datalist`` (ROI items hold only knee centres).

    A reference knee that the pipeline reports absent (or a radiograph that cannot be read)
    counts as missed: infinite error, so it is an outlier and outside every PCK radius. A
    predicted knee without a reference is counted as a false positive (not in the tables).
    """
    data = read_datalist(datalist)
    if data["stage"] == "roi":
        lm_path = Path(landmark_datalist) if landmark_datalist else Path(datalist).with_name("landmark_datalist.json")
        if not lm_path.is_file():
            raise FileNotFoundError(f"{datalist}: ROI items hold only knee centres; the reference landmarks come "
                                    f"from the landmark datalist beside it, and {lm_path} does not exist "
                                    "(pass landmark_datalist=...)")
        truth = _truth_by_image(read_datalist(lm_path)["items"])
        images = [(str(i["image"]), _as_tuple(i.get("spacing_mm")), i.get("subject_id", ""), i.get("fold", ""))
                  for i in _select(data["items"], fold, datalist)]
    else:
        chosen = _select(data["items"], fold, datalist)
        truth = _truth_by_image(chosen)
        images = list(dict.fromkeys((str(i["image"]), _as_tuple(i.get("spacing_mm")), i.get("subject_id", ""),
                                     i.get("fold", "")) for i in chosen))
    images = images[: max_items if max_items else None]

    errors: list[np.ndarray] = []
    records: list[dict[str, Any]] = []
    missed, false_positives, failed = 0, 0, []
    for n, (image, spacing, subject, item_fold) in enumerate(images):
        reference = truth.get(image, {})
        try:
            result = predictor.predict_file(image, spacing_mm=spacing)
        except Exception as err:  # noqa: BLE001 — report it, count its knees as missed, go on
            failed.append({"image": image, "error": str(err)})
            result = None
        for side in SIDES:
            ref = reference.get(side)
            knee = None if result is None else result.knees.get(side)
            present = knee is not None and knee.present
            if ref is None:
                false_positives += int(present)
                continue
            pts, kl = ref
            record = {"image": image, "side": side, "subject_id": subject, "kl": -1 if kl is None else int(kl),
                      "fold": item_fold, "found": present}
            if present:
                row_sp, col_sp = result.pixel_spacing_mm
                errors.append(landmark_errors_mm(np.asarray(knee.landmarks_px)[None], pts[None],
                                                 np.array([[col_sp, row_sp]]))[0])
            else:
                missed += 1
                errors.append(np.full(len(pts), np.inf))
            records.append(record)
        if progress and (n + 1) % 20 == 0:
            print(f"evaluated {n + 1}/{len(images)} radiographs", flush=True)
    if not errors:
        raise ValueError(f"{datalist}: no reference knee among the selected radiographs")
    fold = None if _all_items(fold) else int(fold)  # type: ignore[arg-type]
    context = {"kind": "pipeline", "task": "landmarks", "datalist": str(datalist), "fold": fold,
               "refine": bool(getattr(predictor, "refine", False)),
               "min_confidence": getattr(predictor, "min_confidence", None),
               "n_radiographs": len(images), "missed_knees": missed, "false_positive_knees": false_positives,
               "failed": failed}
    title = f"two-stage pipeline{' + refinement' if context['refine'] else ''}, " \
            f"{'fold ' + str(fold) if fold is not None else 'all radiographs'}"
    return write_evaluation_report(np.stack(errors), records, output_dir, title=title, context=context)


def _as_tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------
def _single_point_aggregation(errors: np.ndarray, radii: Sequence[float] = DEFAULT_RADII) -> dict[str, Any]:
    """The release-aggregation layout for a one-point model (the ROI model's knee centre)."""
    e = errors[:, 0]
    return {"subset": None, "n_knees": len(e), "n_valid": {"knee centre": int(np.count_nonzero(~np.isnan(e)))},
            "pck": {"knee centre": pck(e, radii)}, "mean": pck(e, radii), "std": {r: float("nan") for r in radii},
            "outliers": outlier_rate(errors)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_evaluation_report(errors: np.ndarray, records: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike,
                            title: str = "", context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write tables (CSV + Markdown), CED plots, per-knee errors and ``metrics.json`` for ``(K, M)`` errors in mm.

    ``M = 16``: the release aggregation for the model-selection and the test subsets, each
    overall and per KL grade (``records[k]["kl"]``, ``-1`` = unknown: in "all" only).
    ``M = 1``: one table over that point. Returns the ``metrics.json`` content.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    errors = np.asarray(errors, dtype=np.float64)
    kl = np.array([r.get("kl", -1) for r in records], dtype=np.float64)
    tables: dict[str, list[dict[str, Any]]] = {}
    files: list[str] = []
    groups = "mean ± std over the tibia and femur groups" if errors.shape[1] == NUM_LANDMARKS else "of the knee centre"
    report = [f"# Evaluation: {title}" if title else "# Evaluation", "",
              (f"{errors.shape[0]} knees; errors in mm on the original radiographs; PCK in % ({groups}); "
               "% out = knees with a landmark ≥ 10 mm from its reference."), ""]
    if errors.shape[1] == NUM_LANDMARKS:
        for subset in ("model_selection", "test"):
            rows = [{"setting": "all", **release_aggregation(errors, subset)}] + per_kl_breakdown(errors, kl, subset)
            tables[subset] = rows
            files.append(str(write_table_csv(rows, out / f"pck_{subset}.csv")))
            markdown = format_table_markdown(rows)
            files.append(str(atomic_write_text(out / f"pck_{subset}.md", markdown)))
            ced = out / f"ced_{subset}.png"
            plot_ced(release_group_errors(errors, subset), ced, title=f"{title} — {SUBSET_TITLES[subset]}")
            files.append(str(ced))
            report += [f"## {SUBSET_TITLES[subset].capitalize()}", "", markdown, f"![CED]({ced.name})", ""]
    elif errors.shape[1] == 1:
        rows = [{"setting": "all", **_single_point_aggregation(errors)}]
        for g in KL_GRADES:
            rows.append({"setting": f"KL{g}", "kl_grade": g, **_single_point_aggregation(errors[kl == g])})
        tables["roi"] = rows
        files.append(str(write_table_csv(rows, out / "pck_roi.csv")))
        markdown = format_table_markdown(rows)
        files.append(str(atomic_write_text(out / "pck_roi.md", markdown)))
        ced = out / "ced_roi.png"
        plot_ced({"knee centre": errors[:, 0]}, ced, title=f"{title} — knee centre", max_error_mm=20.0)
        files.append(str(ced))
        report += ["## Knee centre (landmark 4)", "", markdown, f"![CED]({ced.name})", ""]
    else:
        raise ValueError(f"errors must be (K, {NUM_LANDMARKS}) or (K, 1), got shape {errors.shape}")

    errors_csv = out / "errors.csv"
    keys = ["image", "side", "subject_id", "kl", "fold"] + (["found"] if any("found" in r for r in records) else [])

    def _write_errors(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(keys + [f"error_mm_{i}" for i in range(errors.shape[1])])
            for record, row in zip(records, errors):
                writer.writerow([record.get(k, "") for k in keys] + [repr(float(v)) for v in row])

    files.append(str(atomic_write(errors_csv, _write_errors)))
    files.append(str(atomic_write_text(out / "report.md", "\n".join(report))))
    summary = {"title": title, **(dict(context) if context else {}), "n_knees": int(errors.shape[0]),
               "tables": tables, "files": files + [str(out / "metrics.json")]}
    atomic_write_text(out / "metrics.json", json.dumps(_jsonable(summary), indent=1, allow_nan=False) + "\n")
    return summary
