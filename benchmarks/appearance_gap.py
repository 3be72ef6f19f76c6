"""How far apart real CLAHE-processed knee crops and raw radiographs look to the landmark network, with and
without CLAHE.

The network input of each knee (140 mm ROI at 0.6 mm around landmark 4, left knees mirrored,
5th–99th percentile normalisation) is taken from two sources:

* the real OAI crops (CLAHE-processed by the dataset), at their registered spacing;
* raw radiographs (synthetic held-out DICOM/PNG, no processing), at their own spacing;

and summarised by three distributions over the central 100 mm (the crops' field): grey levels,
local contrast (standard deviation in 3 mm windows) and gradient magnitude. The table gives the
1-Wasserstein distance between the two sources for each, with the ROI left as it is and with the
project's CLAHE (:class:`~kneel_monai.transforms.LocalContrast`) applied to every input — the
measurement behind making CLAHE part of the landmark stage's preprocessing.

    python benchmarks/appearance_gap.py --crops runs/real --synthetic out/heldout

Writes ``benchmarks/results/appearance_gap.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _stats(roi: np.ndarray, spacing: float) -> dict[str, np.ndarray]:
    from scipy.ndimage import sobel, uniform_filter

    c = roi.shape[0] // 2
    half = int(50 / spacing)
    centre = roi[c - half:c + half, c - half:c + half].astype(np.float64)
    w = max(3, int(round(3 / spacing)))
    mean = uniform_filter(centre, w)
    local_std = np.sqrt(np.clip(uniform_filter(centre ** 2, w) - mean ** 2, 0, None))
    grad = np.hypot(sobel(centre, 0), sobel(centre, 1)) / 8
    return {"grey": centre.ravel(), "local_std": local_std.ravel(), "gradient": grad.ravel()}


def _rois(items, clahe: bool, limit: int):
    from kneel_monai.data.pipelines import landmark_stage_transforms

    spec = {"kind": "clahe", "tile_mm": 16.0, "clip_limit": 0.01} if clahe else None
    chain = landmark_stage_transforms(False, spacing_mm=0.6, pad=260, crop=224, local_contrast=spec)
    return [chain(dict(item))["image"][0].numpy() for item in items[:limit]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=Path, required=True, help="kneel build-oai-crops output folder")
    parser.add_argument("--synthetic", type=Path, required=True, help="raw radiographs with ground truth (kneel synth)")
    parser.add_argument("--n", type=int, default=60, help="knees per source")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "appearance_gap.json")
    ns = parser.parse_args()
    from scipy.stats import wasserstein_distance

    from kneel_monai.data.datalists import build_datalists, read_datalist

    crops = [i for i in read_datalist(ns.crops / "landmark_datalist.json")["items"]
             if i.get("source") == "oai_crops" and i["fold"] == 0]
    raw = build_datalists(ns.synthetic.resolve(), progress=False).landmarks
    rows = []
    for clahe in (False, True):
        pooled = {}
        for name, items in (("crops", crops), ("raw", raw)):
            stats = [_stats(r, 0.6) for r in _rois(items, clahe, ns.n)]
            pooled[name] = {k: np.concatenate([s[k] for s in stats]) for k in stats[0]}
        row = {"preprocessing": "percentile + CLAHE" if clahe else "percentile only"}
        for key in ("grey", "local_std", "gradient"):
            rng = np.random.default_rng(0)
            a = rng.choice(pooled["crops"][key], 200_000)
            b = rng.choice(pooled["raw"][key], 200_000)
            row[key] = float(wasserstein_distance(a, b))
        rows.append(row)
    print("| preprocessing | grey levels | local contrast (3 mm std) | gradient magnitude |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['preprocessing']} | {r['grey']:.4f} | {r['local_std']:.4f} | {r['gradient']:.4f} |")
    print("(1-Wasserstein distance between real CLAHE crops and raw radiographs; lower = closer)")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"n_per_source": ns.n, "rows": rows}, indent=1))
    print(f"wrote {ns.out}")


if __name__ == "__main__":
    main()
