"""End-to-end `kneel predict` throughput on this machine: the shipped pipeline vs. the release configuration.

Every row runs the cohort runner (``predict_paths``: read → normalise → stage 1 → stage 2 →
refinement → write JSON, CSV, overlay PNG and ``.mrk.json``) over the same synthetic bilateral
radiographs (realistic sizes, 2000–2900 px at 0.14–0.2 mm), in its own process, after one warm-up
radiograph. Rows:

* ``default``: the shipped models (CPU geometry), refinement on — what ``kneel predict`` runs;
* ``default, no refine``: the same without the refinement pass (``--no-refine``);
* ``default, 1 reader``: refinement on, radiographs read in a DataLoader worker (``--workers 1``);
* ``release``: the original release's configuration — N 24, depth 4, 3×3 "1×1" convolutions,
  3 channels, ROI at 1 mm and landmarks at 0.3 mm on 450 × 450 crops, 3 network passes per
  knee pair (stage 1, stage 2, refinement) and the release's detection (each half's stage-1 answer
  taken as its knee: no shape check, zooms or search) — with random weights (speed only). The
  baseline. (Random weights give no knee-shaped answer, so the shipped detection would scan every
  film with them: a cost of the weights, not of the release's pipeline.)

Figures: radiographs/s, seconds per radiograph and the per-stage breakdown (means per
radiograph), and the speed-up against the release row of the same run.

    python benchmarks/bench_predict.py            # 6 radiographs
    python benchmarks/bench_predict.py --n 3      # quicker

Writes ``benchmarks/results/bench_predict.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = {
    "default": dict(refine=True, workers=0, model="shipped"),
    "default, no refine": dict(refine=False, workers=0, model="shipped"),
    "default, 1 reader": dict(refine=True, workers=1, model="shipped"),
    "release": dict(refine=True, workers=0, model="release"),
}
STAGES = ("read", "normalise", "detect", "write")  # "detect": stage 1, stage 2, refinement and any scan


def _release_models(folder: Path) -> tuple[Path, Path]:
    """Release-configuration models (random weights) in the project format: ``(roi, landmarks)``."""
    import torch

    from kneel_monai.model_io import save_model
    from kneel_monai.networks import build_network

    intensity = {"kind": "release_mean_std", "mean": [102.0] * 3, "std": [56.1] * 3}
    dirs = []
    for task, points, spacing in (("roi", 1, 1.0), ("landmarks", 16, 0.3)):
        torch.manual_seed(points)
        net = build_network("release", out_points=points)
        pre = {"spacing_mm": spacing, "pad_size": 520, "crop_size": 450, "intensity": intensity}
        if task == "landmarks":
            pre["roi_size_mm"] = 140.0
        dirs.append(save_model(folder / task, task, net.hparams, [net.state_dict()], pre,
                               {"benchmark": "release configuration, random weights"}))
    return dirs[0], dirs[1]


def _worker(row: str, data: str, out: str) -> dict:
    from kneel_monai.cohort import find_radiographs, predict_paths
    from kneel_monai.detection import ScanSettings
    from kneel_monai.inference import KneelPredictor, default_model_dirs

    cfg = ROWS[row]
    models = default_model_dirs() if cfg["model"] == "shipped" else _release_models(Path(out) / "models")
    scan = ScanSettings() if cfg["model"] == "shipped" else ScanSettings(  # the release's: one answer per half
        knee_shape_limit=None, scan=False, local_steps=0, whole_image=False, proposal_zooms=(1.0,), size_rounds=0)
    predictor = KneelPredictor(*models, device="cpu", refine=cfg["refine"], min_confidence=0.0, scan=scan)
    files, _ = find_radiographs(data)
    predict_paths(predictor, files[:1], Path(out) / "warmup", progress=False)  # warm-up
    t0 = time.perf_counter()
    summary = predict_paths(predictor, files, Path(out) / "run", progress=False, workers=cfg["workers"])
    wall = time.perf_counter() - t0
    n = summary["n_ok"]
    return {"row": row, "n": n, "failed": summary["n_failed"], "wall_s": wall, "s_per_radiograph": wall / n,
            "radiographs_per_s": n / wall,
            "breakdown_s": {k: summary["timings_s"].get(k, 0.0) / n for k in STAGES},
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=6, help="radiographs (default 6)")
    parser.add_argument("--seed", type=int, default=5_500_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_predict.json")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.worker:
        print(json.dumps(_worker(*ns.worker)))
        return
    from tqdm import tqdm

    from kneel_monai.synthetic.generate import generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "radiographs"
        generate_dataset(data, n=ns.n, seed=ns.seed, fmt="dcm", single_knee_fraction=0.0, progress=False)
        rows = []
        for row in tqdm(ROWS, desc="pipelines", unit="row"):
            out = subprocess.run([sys.executable, __file__, "--worker", row, str(data), str(Path(tmp) / row)],
                                 check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    base = next(r for r in rows if r["row"] == "release")["s_per_radiograph"]
    head = f"{'pipeline':<20} {'s/radiograph':>12} {'radiographs/s':>13} {'× release':>9} " + " ".join(
        f"{s:>9}" for s in STAGES) + f" {'peak MiB':>9}"
    print(head)
    for r in rows:
        r["speedup_vs_release"] = base / r["s_per_radiograph"]
        print(f"{r['row']:<20} {r['s_per_radiograph']:>12.2f} {r['radiographs_per_s']:>13.2f} "
              f"{r['speedup_vs_release']:>9.2f} " + " ".join(f"{r['breakdown_s'][s]:>9.3f}" for s in STAGES)
              + f" {r['peak_rss_mib']:>9.0f}")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"benchmark": "kneel predict end to end", "radiographs": ns.n, "seed": ns.seed,
                                  "baseline": "release configuration (3 passes), same run", "rows": rows},
                                 indent=2) + "\n")
    print(f"\nwrote {ns.out}")


if __name__ == "__main__":
    main()
