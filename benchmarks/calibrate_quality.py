"""How well the per-knee quality signals separate good predictions from bad ones, on radiographs with ground truth.

For every knee of a folder of radiographs with ground-truth JSONs (``kneel synth`` output), runs
the shipped pipeline (with MC-dropout) and records the knee's worst landmark error (mm) next to
its signals: mean and minimum heat-map confidence, the largest MC-dropout spread, and the flag of
the default :class:`~kneel_monai.quality.QualityThresholds`. Prints, per signal and threshold,
how many knees it flags and how many of the bad knees (worst error ≥ ``--bad-mm``) it catches.

    kneel synth out/heldout --n 60 --seed 900000 --format mixed
    python benchmarks/calibrate_quality.py out/heldout

Writes ``benchmarks/results/calibrate_quality.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="radiographs with ground-truth JSONs (kneel synth output)")
    parser.add_argument("--mc-samples", type=int, default=8)
    parser.add_argument("--bad-mm", type=float, default=5.0, help="a knee is bad when its worst landmark is this far")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "calibrate_quality.json")
    ns = parser.parse_args()
    from tqdm import tqdm

    from kneel_monai.data.ground_truth import is_ground_truth_file, read_ground_truth
    from kneel_monai.inference import KneelPredictor, default_model_dirs

    predictor = KneelPredictor(*default_model_dirs(), device="cpu", mc_samples=ns.mc_samples)
    knees = []
    for truth_path in tqdm([p for p in sorted(ns.folder.glob("*.json")) if is_ground_truth_file(p)],
                           desc="radiographs"):
        truth = read_ground_truth(truth_path)
        # PNG carries no trustworthy spacing: take the ground truth's, as the evaluation does
        spacing = truth.pixel_spacing_mm if truth.image.suffix.lower() == ".png" else None
        result = predictor.predict_file(truth.image, spacing)
        spacing = np.array(result.pixel_spacing_mm[::-1])
        for side, knee in result.knees.items():
            ref = truth.knees.get(side)
            if ref is None or not knee.present:
                knees.append({"side": side, "present": knee.present, "reference": ref is not None})
                continue
            err = np.linalg.norm((knee.landmarks_px - ref.landmarks_px) * spacing, axis=1)
            knees.append({"side": side, "present": True, "reference": True, "image": truth.image.name,
                          "worst_mm": float(err.max()), "mean_mm": float(err.mean()),
                          "mean_confidence": float(knee.confidence.mean()),
                          "min_confidence": float(knee.confidence.min()),
                          "max_spread_mm": float(knee.spread_mm.max()), "quality": knee.quality,
                          "reasons": knee.quality_reasons})
    measured = [k for k in knees if k.get("worst_mm") is not None]
    worst = np.array([k["worst_mm"] for k in measured])
    bad = worst >= ns.bad_mm
    print(f"{len(measured)} knees with a reference; worst landmark error: median {np.median(worst):.2f} mm, "
          f"95th percentile {np.percentile(worst, 95):.2f} mm, max {worst.max():.2f} mm; "
          f"{bad.sum()} bad (≥ {ns.bad_mm} mm)")
    rows = []
    signals = {"mean_confidence": ("<", [0.1, 0.15, 0.2, 0.25, 0.3]), "min_confidence": ("<", [0.002, 0.005, 0.01]),
               "max_spread_mm": (">", [1.0, 1.5, 2.0, 3.0, 5.0])}
    print(f"{'signal':<16} {'threshold':>9} {'flagged':>8} {'bad caught':>11} {'good flagged':>13}")
    for name, (op, thresholds) in signals.items():
        values = np.array([k[name] for k in measured])
        for t in thresholds:
            flag = values < t if op == "<" else values > t
            row = {"signal": name, "op": op, "threshold": t, "flagged": int(flag.sum()),
                   "bad_caught": int((flag & bad).sum()), "bad": int(bad.sum()),
                   "good_flagged": int((flag & ~bad).sum())}
            rows.append(row)
            print(f"{name:<16} {op}{t:>8} {row['flagged']:>8} {row['bad_caught']:>5}/{row['bad']:<5} "
                  f"{row['good_flagged']:>13}")
    default = np.array([k["quality"] == "check" for k in measured])
    print(f"default flag: {default.sum()} flagged, {(default & bad).sum()}/{bad.sum()} bad caught, "
          f"{(default & ~bad).sum()} good flagged")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"bad_mm": ns.bad_mm, "mc_samples": ns.mc_samples, "rows": rows, "knees": knees},
                                 indent=1) + "\n")
    print(f"wrote {ns.out}")


if __name__ == "__main__":
    main()
