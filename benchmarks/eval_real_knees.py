"""Landmark accuracy on real knees (the OAI crop set's test part) and on the synthetic benchmark, side by side.

Real knees: every crop of ``landmark_test_datalist.json`` (``kneel build-oai-crops`` output; the
project's test part, never trained or tuned on) is run as the pipeline runs stage 2 (crop centre,
then re-centred on landmark 4); errors in mm at each crop's registered spacing, the similarity-
aligned (shape) error and the population mean-shape baseline beside it, per KL grade, CED plots
(:mod:`kneel_monai.training.crop_evaluation`). Synthetic: the whole two-stage pipeline on held-out
synthetic radiographs (raw, no CLAHE; ``kneel synth --n 60 --seed 900000 --format mixed``).
Several ``--model`` directories are measured in the same run (e.g. the previous release beside
the new one).

    kneel synth out/heldout --n 60 --seed 900000 --format mixed
    python benchmarks/eval_real_knees.py --crops runs/real --synthetic out/heldout \\
        --model bundles/kneel_landmarks/models/landmarks --model old/landmarks

Writes per model ``<out>/<name>/crops`` and ``<out>/<name>/synthetic`` (tables, CED plots,
per-knee errors) and ``<out>/eval_real_knees.json`` with the summary table it prints.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=Path, required=True,
                        help="kneel build-oai-crops output folder (landmark_test_datalist.json)")
    parser.add_argument("--synthetic", type=Path, help="held-out synthetic radiographs (kneel synth output)")
    parser.add_argument("--model", action="append", type=Path, help="landmark model directory (repeatable; "
                        "default: the shipped one)")
    parser.add_argument("--roi-model", type=Path,
                        help="ROI model for the synthetic pipeline (default: the shipped one)")
    parser.add_argument("--part", default="test", choices=("test", "validation"),
                        help="which part of the crop set (validation: for tuning; test: for reporting)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "real_knees")
    ns = parser.parse_args()

    import torch

    from kneel_monai.data.datalists import build_datalists, read_datalist, write_datalist
    from kneel_monai.inference import KneelPredictor, default_model_dirs
    from kneel_monai.training.crop_evaluation import evaluate_crops
    from kneel_monai.training.evaluation import evaluate_pipeline

    torch.set_num_threads(max(1, torch.get_num_threads()))
    roi_default, lm_default = default_model_dirs()
    models = ns.model or [lm_default]
    if ns.part == "test":
        crops_list = ns.crops / "landmark_test_datalist.json"
    else:  # the validation part lives in the training datalist as fold 0
        items = [i for i in read_datalist(ns.crops / "landmark_datalist.json")["items"]
                 if i.get("source") == "oai_crops" and i["fold"] == 0]
        crops_list = write_datalist(ns.out / "validation_crops.json", "landmarks", items)
    synthetic_list = None
    if ns.synthetic is not None:
        synthetic_list = ns.out / "synthetic_lists" / "roi_datalist.json"
        if not synthetic_list.is_file():
            build_datalists(ns.synthetic.resolve()).write(synthetic_list.parent)
    rows = []
    for model in models:
        name = f"{model.parent.name}_{model.name}" if model.name in ("landmarks", "hc") else model.name
        predictor = KneelPredictor(ns.roi_model or roi_default, model, device="cpu")
        t0 = time.perf_counter()
        crops = evaluate_crops(predictor, crops_list, ns.out / name / "crops", shapes_datalist=ns.crops /
                               "landmark_datalist.json", title=f"{name}: real crops ({ns.part})")
        row = {"model": str(model), "name": name, "crops_s": time.perf_counter() - t0,
               **{f"crops_{kind}": crops[kind] for kind in ("registered", "aligned", "mean_shape")}}
        if synthetic_list is not None:
            syn = evaluate_pipeline(predictor, synthetic_list, ns.out / name / "synthetic", progress=False)
            test_all = syn["tables"]["test"][0]
            row["synthetic"] = {"n_knees": syn["n_knees"], "missed": syn["missed_knees"],
                                "false_positive": syn["false_positive_knees"],
                                "pck_2.5_mean": float(test_all["mean"][2.5]),
                                "outliers_pct": float(test_all["outliers"])}
        rows.append(row)

    head = ("| model | crops: median mm | PCK@1 | PCK@1.5 | PCK@2 | PCK@2.5 | knees > 10 mm % | aligned median mm | "
            "mean shape median mm | synthetic PCK@2.5 | synthetic out % | missed |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        reg, ali, base = (r[f"crops_{k}"]["all"] for k in ("registered", "aligned", "mean_shape"))
        syn = r.get("synthetic", {})
        lines.append(f"| {r['name']} | {reg['median_mm']:.2f} | " + " | ".join(f"{reg['pck'][k]:.1f}" for k in
                     ("1.0", "1.5", "2.0", "2.5")) + f" | {reg['outlier_knees_pct']:.1f} | {ali['median_mm']:.2f} | "
                     f"{base['median_mm']:.2f} | {syn.get('pck_2.5_mean', float('nan')):.1f} | "
                     f"{syn.get('outliers_pct', float('nan')):.1f} | {syn.get('missed', '—')} |")
    table = "\n".join(lines)
    print(table)
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "eval_real_knees.json").write_text(json.dumps({"part": ns.part, "rows": rows, "table": table},
                                                            indent=1, default=str))
    print(f"wrote {ns.out / 'eval_real_knees.json'}")


if __name__ == "__main__":
    main()
