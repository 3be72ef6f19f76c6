"""Landmark accuracy on single-knee crops with registered references (the real OAI crop set's test part).

Each crop is run as the pipeline runs stage 2 (around the crop centre, then re-centred on the
predicted landmark 4). Three errors are reported per landmark, all in mm at each crop's
registered spacing:

* **registered**: prediction vs the registered annotation — the error a user sees;
* **similarity-aligned**: after the least-squares similarity of the prediction onto the reference
  — the shape error alone (what remains when pose and scale are forgiven);
* **mean shape**: the population mean shape (no image looked at) aligned the same way — the
  baseline a model must clearly beat to be worth looking at the image.

Registered-error tables follow the release aggregation (:func:`write_evaluation_report`); the
pooled tables count every landmark of the test subset (0, 4, 8, 9, 12, 15) on its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..data.datalists import read_datalist
from ..data.oai_crops import predict_crop
from ..io import read_radiograph
from ..metrics import DEFAULT_RADII, plot_ced
from ..shape_plausibility import procrustes_mean, right_oriented
from ..similarity import aligned_residuals
from .evaluation import _jsonable, _select, write_evaluation_report

__all__ = ["TEST_IDS", "pooled_summary", "crop_predictions", "evaluate_crops"]

TEST_IDS = (0, 4, 8, 9, 12, 15)
KINDS = ("registered", "aligned", "mean_shape")


def pooled_summary(errors: np.ndarray, ids: tuple[int, ...] = TEST_IDS, radii=DEFAULT_RADII,
                   outlier_mm: float = 10.0) -> dict[str, Any]:
    """Every landmark of ``ids`` counted on its own: median / 95th percentile error, PCK@r in %,
    and the % of knees with any of those landmarks beyond ``outlier_mm``."""
    e = np.asarray(errors, dtype=np.float64)[:, list(ids)]
    if e.size == 0:
        return {"n_knees": 0}
    return {"n_knees": int(e.shape[0]), "median_mm": float(np.median(e)), "mean_mm": float(np.mean(e)),
            "p95_mm": float(np.percentile(e, 95)), "max_mm": float(np.max(e)),
            "pck": {str(r): float(100 * np.mean(e <= r)) for r in radii},
            "outlier_knees_pct": float(100 * np.mean((e > outlier_mm).any(axis=1)))}


def crop_predictions(predictor: Any, items: list[dict[str, Any]], progress: bool = True) -> list[dict[str, Any]]:
    """Run every crop item; each result holds the prediction, confidence, reference and spacing.

    With ``predictor.mc_samples`` the MC-dropout spread (mm) of the final pass is added.
    """
    from tqdm import tqdm

    from ..landmarks import KNEE_CENTRE_ID
    from ..transforms import points_to_mm

    out = []
    for item in tqdm(items, desc="crops", unit="crop", disable=not progress):
        spacing = item.get("spacing_mm")
        image = read_radiograph(item["image"], spacing)
        norm = predictor._normalise(image)
        pred, conf = predict_crop(predictor, norm, item["side"])
        spread = None
        if getattr(predictor, "mc_samples", 0):
            spread = predictor.landmark_spread(norm, {item["side"]: pred[KNEE_CENTRE_ID]},
                                               predictor.mc_samples)[item["side"]]
        mm = points_to_mm(pred, image.affine)
        out.append({"key": item.get("key", Path(item["image"]).stem), "image": item["image"], "side": item["side"],
                    "kl": item.get("kl"), "subject_id": item.get("subject_id", ""),
                    "spacing_mm": float(image.affine[0, 0]), "pred_px": pred, "confidence": conf,
                    "pred_mm": mm, "reference_px": np.asarray(item["landmarks_px"], dtype=np.float64),
                    "spread_mm": spread})
    return out


def _errors(results: list[dict[str, Any]], mean: np.ndarray) -> dict[str, np.ndarray]:
    reg, ali, base = [], [], []
    for r in results:
        ref, pred, sp = r["reference_px"], r["pred_px"], r["spacing_mm"]
        reg.append(np.linalg.norm(pred - ref, axis=1) * sp)
        ali.append(aligned_residuals(pred, ref) * sp)
        base.append(aligned_residuals(right_oriented(mean, r["side"]), ref) * sp)
    return {"registered": np.array(reg), "aligned": np.array(ali), "mean_shape": np.array(base)}


def evaluate_crops(predictor: Any, datalist: str | os.PathLike, output_dir: str | os.PathLike,
                   shapes_datalist: str | os.PathLike | None = None, fold: int | str | None = None,
                   title: str = "real knee crops", progress: bool = True) -> dict[str, Any]:
    """Evaluate ``predictor``'s landmark stage on a crop datalist (``kneel build-oai-crops``'s
    ``landmark_test_datalist.json``) and write tables, CED plots and per-crop predictions.

    ``shapes_datalist``: the crops whose Procrustes mean is the mean-shape baseline (default: the
    ``oai_crops`` items of the ``landmark_datalist.json`` beside ``datalist`` — the training and
    validation parts, never the test part). Returns the summary written to ``crops_metrics.json``.
    """
    out = Path(output_dir)
    items = _select(read_datalist(datalist)["items"], fold, datalist)
    shapes_path = Path(shapes_datalist) if shapes_datalist else Path(datalist).with_name("landmark_datalist.json")
    shape_items = [i for i in read_datalist(shapes_path)["items"] if i.get("source") == "oai_crops"]
    if not shape_items:
        raise ValueError(f"{shapes_path}: no oai_crops items to build the mean-shape baseline from")
    mean, _ = procrustes_mean([np.asarray(i["landmarks_px"]) for i in shape_items], [i["side"] for i in shape_items])
    results = crop_predictions(predictor, items, progress)
    errors = _errors(results, mean)
    records = [{"image": r["image"], "side": r["side"], "subject_id": r["subject_id"],
                "kl": -1 if r["kl"] is None else int(r["kl"]), "fold": "test"} for r in results]
    release = write_evaluation_report(errors["registered"], records, out / "registered", title=title,
                                      context={"kind": "crops", "datalist": str(datalist)})
    kl = np.array([rec["kl"] for rec in records])
    summary: dict[str, Any] = {"title": title, "datalist": str(datalist), "n_knees": len(results),
                               "mean_shape_from": f"{shapes_path} ({len(shape_items)} crops)",
                               "refine": bool(getattr(predictor, "refine", True))}
    for kind in KINDS:
        summary[kind] = {"all": pooled_summary(errors[kind]),
                         **{f"KL{g}": pooled_summary(errors[kind][kl == g]) for g in range(5) if (kl == g).any()}}
    summary["release_test_subset"] = release["tables"]["test"][0]
    plot_ced({"registered": errors["registered"][:, list(TEST_IDS)].ravel(),
              "similarity-aligned": errors["aligned"][:, list(TEST_IDS)].ravel(),
              "mean shape, aligned": errors["mean_shape"][:, list(TEST_IDS)].ravel()},
             out / "ced_crops.png", title=f"{title} — landmarks 0, 4, 8, 9, 12, 15", ylabel="% of landmarks")
    per_crop = [{"key": r["key"], "side": r["side"], "kl": r["kl"], "spacing_mm": r["spacing_mm"],
                 "pred_px": np.round(r["pred_px"], 3).tolist(), "confidence": np.round(r["confidence"], 4).tolist(),
                 "spread_mm": None if r["spread_mm"] is None else np.round(r["spread_mm"], 4).tolist(),
                 "error_mm": np.round(errors["registered"][n], 4).tolist(),
                 "aligned_error_mm": np.round(errors["aligned"][n], 4).tolist()} for n, r in enumerate(results)]
    atomic_write_text(out / "crops.json", json.dumps(per_crop, indent=0))
    atomic_write_text(out / "crops_metrics.json", json.dumps(_jsonable(summary), indent=1))
    atomic_write_text(out / "crops_report.md", crops_markdown(summary))
    return summary


def crops_markdown(summary: dict[str, Any]) -> str:
    """The pooled table: one row per error kind and KL grade."""
    radii = [str(r) for r in DEFAULT_RADII]
    head = "| error | knees | median mm | 95th pct mm | " + " | ".join(f"PCK@{r} mm" for r in radii) + \
        " | knees > 10 mm (%) |"
    lines = [f"# {summary['title']}", "", f"{summary['n_knees']} knees; landmarks 0, 4, 8, 9, 12, 15 pooled; "
             "mm at each crop's registered spacing.", "", head, "|" + "---|" * (len(radii) + 5)]
    for kind in KINDS:
        for group, s in summary[kind].items():
            if not s.get("n_knees"):
                continue
            lines.append(f"| {kind} {group} | {s['n_knees']} | {s['median_mm']:.2f} | {s['p95_mm']:.2f} | "
                         + " | ".join(f"{s['pck'][r]:.1f}" for r in radii) + f" | {s['outlier_knees_pct']:.1f} |")
    return "\n".join(lines) + "\n"
