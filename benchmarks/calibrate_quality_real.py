"""Calibrate the per-knee quality flag on real knees: thresholds from the validation part, judged on the test part.

For every crop of the real OAI crop set's validation and test parts (``kneel build-oai-crops``
output), runs the landmark stage as the pipeline does with MC-dropout and records the knee's worst
landmark error (mm, registered spacing) beside its signals: mean heat-map confidence, largest
MC-dropout spread, shape distance (:mod:`kneel_monai.shape_plausibility`) and the measurements.
Thresholds are chosen on the **validation** part only:

* mean confidence: the 1st percentile of the good knees (worst error < ``--bad-mm``);
* MC spread and shape distance: the 99th percentile of the good knees (a good knee is rarely flagged);

then the flag with those thresholds is reported on the **test** part: bad knees caught, good
knees flagged. ``--fit-shape-model`` first refits the shipped shape plausibility model on the
annotations of the training part.

    python benchmarks/calibrate_quality_real.py CROPS_DIR runs/real --model bundles/kneel_landmarks/models/landmarks

Writes ``benchmarks/results/calibrate_quality_real.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np


def _signals(results, shape_model):
    from kneel_monai.measurements import knee_measurements

    rows = []
    for r in results:
        err = np.linalg.norm(r["pred_px"] - r["reference_px"], axis=1) * r["spacing_mm"]
        rows.append({"key": r["key"], "kl": r["kl"], "worst_mm": float(err.max()),
                     "mean_confidence": float(np.mean(r["confidence"])),
                     "max_spread_mm": float(np.max(r["spread_mm"])),
                     "shape_distance": shape_model.distance(r["pred_mm"], r["side"]),
                     "measurements": knee_measurements(r["pred_mm"])})
    return rows


def _judge(rows, thresholds, bad_mm):
    from kneel_monai.quality import assess_knee

    flagged, bad = [], []
    for row in rows:
        quality, reasons = assess_knee(np.full(16, row["mean_confidence"]), row["measurements"],
                                       np.array([row["max_spread_mm"]]), thresholds, row["shape_distance"])
        row["quality"], row["reasons"] = quality, reasons
        flagged.append(quality == "check")
        bad.append(row["worst_mm"] >= bad_mm)
    flagged, bad = np.array(flagged), np.array(bad)
    return {"knees": len(rows), "bad": int(bad.sum()), "bad_caught": int((bad & flagged).sum()),
            "good_flagged": int((~bad & flagged).sum()), "good": int((~bad).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("crops_dir", type=Path, help="the crop set (<key>.png + reference.json)")
    parser.add_argument("built", type=Path, help="kneel build-oai-crops output folder")
    parser.add_argument("--model", type=Path, help="landmark model (default: the shipped one)")
    parser.add_argument("--mc-samples", type=int, default=8)
    parser.add_argument("--bad-mm", type=float, default=5.0)
    parser.add_argument("--fit-shape-model", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "calibrate_quality_real.json")
    ns = parser.parse_args()

    from kneel_monai.data.datalists import read_datalist
    from kneel_monai.data.oai_crops import read_crop_reference, read_split
    from kneel_monai.inference import KneelPredictor, default_model_dirs
    from kneel_monai.quality import QualityThresholds
    from kneel_monai.shape_plausibility import default_model_path, fit_plausibility_model, load_plausibility_model
    from kneel_monai.training.crop_evaluation import crop_predictions

    if ns.fit_shape_model:
        records, _ = read_crop_reference(ns.crops_dir)
        split = read_split()
        train = [r for r in records if split.get(r.key) == "train"]
        model = fit_plausibility_model([r.annotation for r in train], [r.side for r in train], source=(
            f"KNEEL annotations of the {len(train)} knees in the training part of the real OAI crop set "
            "(kneel_monai/data/oai_crops_split.json); benchmarks/calibrate_quality_real.py --fit-shape-model"))
        model.save(default_model_path())
        load_plausibility_model.cache_clear()
        print(f"shape model: {len(model.variances)} modes from {len(train)} training knees → {default_model_path()}")
    shape_model = load_plausibility_model()

    roi, landmarks = default_model_dirs()
    predictor = KneelPredictor(roi, ns.model or landmarks, device="cpu", mc_samples=ns.mc_samples)
    validation = [i for i in read_datalist(ns.built / "landmark_datalist.json")["items"]
                  if i.get("source") == "oai_crops" and i["fold"] == 0]
    test = read_datalist(ns.built / "landmark_test_datalist.json")["items"]
    rows = {"validation": _signals(crop_predictions(predictor, validation), shape_model),
            "test": _signals(crop_predictions(predictor, test), shape_model)}

    good = [r for r in rows["validation"] if r["worst_mm"] < ns.bad_mm]
    calibrated = replace(
        QualityThresholds(),
        mean_confidence=round(float(np.percentile([r["mean_confidence"] for r in good], 1)), 3),
        max_spread_mm=round(float(np.percentile([r["max_spread_mm"] for r in good], 99)), 2),
        max_shape_distance=round(float(np.percentile([r["shape_distance"] for r in good], 99)), 2))
    report = {"model": str(ns.model or landmarks), "bad_mm": ns.bad_mm, "mc_samples": ns.mc_samples,
              "shipped_thresholds": asdict(QualityThresholds()), "calibrated_thresholds": asdict(calibrated),
              "results": {}}
    print(f"calibrated on {len(rows['validation'])} validation knees ({len(good)} good): {calibrated}")
    print("| part | thresholds | knees | bad (≥ %.0f mm) | bad caught | good flagged |" % ns.bad_mm)
    print("|---|---|---|---|---|---|")
    for part in ("validation", "test"):
        for name, thresholds in (("shipped", QualityThresholds()), ("calibrated", calibrated)):
            result = _judge(rows[part], thresholds, ns.bad_mm)
            report["results"][f"{part}/{name}"] = result
            print(f"| {part} | {name} | {result['knees']} | {result['bad']} | {result['bad_caught']} | "
                  f"{result['good_flagged']} of {result['good']} |")
    report["knees"] = rows
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(report, indent=1, default=float))
    print(f"wrote {ns.out}")


if __name__ == "__main__":
    main()
