"""Real full radiographs end to end: knees found, their sides, view verdicts — and the synthetic benchmark beside.

Runs the whole pipeline (``KneelPredictor.predict_file``) on every image of a folder holding a
``views.csv`` (``file, view``; view ∈ bilateral_ap, single_ap, lateral, foot, other), as a user
would: JPEG/PNG files get a guessed spacing from the field sizes a user knows (a bilateral field
about 39 cm wide, a single-knee field about 27 cm tall), DICOMs their own. Writes

* ``<out>/full_radiographs.md`` / ``.json``: one row per image (knees found, side and how it was
  decided, quality, shape distance, ROI zoom, view verdict, seconds) and the summary: AP knees
  found of those expected, single-knee sides, non-AP images with a knee reported ``ok`` (target 0)
  or present at all;
* a contact sheet of the overlays (``--sheet``, e.g. ``docs/images/real_full_contact_sheet.png``)
  — the only way to see whether the landmarks sit on the joint: look at it;
* with ``--synthetic``, the pipeline benchmark on held-out synthetic radiographs (PCK@2.5 mm,
  missed and false-positive knees), so a change for real films is seen not to cost the synthetic ones.

Films a user loads differ from these in ways that can be simulated without tuning to them (the
knees' positions, side and view stay what they are): ``--downscale F`` reads each film as an export
``F`` times smaller (resampled with anti-aliasing to ``F`` times the spacing), ``--jpeg-quality Q``
re-compresses it as a JPEG of quality ``Q`` first, ``--spacing-error E`` multiplies every guessed
spacing by ``E`` (a user who guessed the field ``E`` times too large).

    python benchmarks/eval_full_radiographs.py --images <folder with views.csv> \\
        --synthetic out/heldout --sheet docs/images/real_full_contact_sheet.png
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np

EXPECTED_KNEES = {"bilateral_ap": 2, "single_ap": 1}
FIELD_WIDTH_MM = {"bilateral_ap": 390.0}  # field width a user would guess; other views: height
FIELD_HEIGHT_MM = 270.0


def guessed_spacing(path: Path, view: str) -> float | None:
    """The spacing a user would give a file without one (None: the file has its own)."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        return None
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    return FIELD_WIDTH_MM[view] / w if view in FIELD_WIDTH_MM else FIELD_HEIGHT_MM / h


def stage1_offsets_mm(result: dict, width: int) -> dict[str, float]:
    """How far stage 1's centre of each half was from the knee found there (its landmark 4), in mm: whether
    stage 1 itself found the knee, or the searches after it did."""
    from kneel_monai.detection import orientation_at

    stage1 = result["detection"].get("stage1_px") or {}
    mm = float(np.mean(result["pixel_spacing_mm"]))
    out = {}
    for side, knee in result["knees"].items():
        if knee["present"] and stage1:
            centre = np.asarray(knee["landmarks_px"][4])
            half = orientation_at(centre[0], width)  # the half stage 1 read the knee in
            out[side] = round(float(np.linalg.norm(centre - np.asarray(stage1[half])) * mm), 1)
    return out


def recompressed(path: Path, spacing: float | None, folder: Path, quality: int) -> tuple[Path, float]:
    """The film re-encoded as an 8-bit grey JPEG of ``quality`` (a DICOM's display range scaled to 8 bits),
    and the spacing it had (the guess, or a DICOM's own)."""
    from PIL import Image

    from kneel_monai.io import read_radiograph

    image = read_radiograph(path, spacing)
    pixels = image.numpy()[0]
    lo, hi = np.percentile(pixels, [0.1, 99.9])
    grey = (np.clip((pixels - lo) / max(hi - lo, 1e-6), 0, 1) * 255).round().astype(np.uint8)
    out = folder / f"{path.stem}_q{quality}.jpg"
    Image.fromarray(grey).save(out, quality=quality)
    return out, float(np.mean(image.meta["pixel_spacing_mm"]))


def knee_text(knee: dict, eased: bool = False) -> str:
    if not knee["present"]:
        return "—"
    how = f"{knee['side_source']}, eased partner" if eased else knee["side_source"]
    return f"{knee['quality']} ({how}, d {knee['shape_distance']:.1f}, zoom {knee['roi_zoom']})"


def contact_sheet(tiles: list[Path], path: Path, per_row: int = 7, height: int = 360) -> None:
    from PIL import Image

    images = [Image.open(t).convert("RGB") for t in tiles]
    images = [im.resize((max(1, round(im.width * height / im.height)), height)) for im in images]
    rows = [images[i:i + per_row] for i in range(0, len(images), per_row)]
    width = max(sum(im.width for im in row) for row in rows)
    sheet = Image.new("RGB", (width, height * len(rows)), "white")
    for r, row in enumerate(rows):
        x = 0
        for im in row:
            sheet.paste(im, (x, r * height))
            x += im.width
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="folder with the radiographs and views.csv")
    parser.add_argument("--synthetic", type=Path, help="held-out synthetic radiographs (kneel synth output)")
    parser.add_argument("--model", type=Path, help="model folder (default: the shipped models)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "full_radiographs")
    parser.add_argument("--sheet", type=Path, help="contact sheet PNG (default: <out>/contact_sheet.png)")
    parser.add_argument("--downscale", type=float, default=1.0, help="read each film F times smaller")
    parser.add_argument("--jpeg-quality", type=int, help="re-compress each film as a JPEG of this quality first")
    parser.add_argument("--spacing-error", type=float, default=1.0, help="multiply each guessed spacing by E")
    ns = parser.parse_args()

    import torch
    from tqdm import tqdm

    from kneel_monai.inference import KneelPredictor, resolve_model_dirs
    from kneel_monai.io import read_radiograph
    from kneel_monai.transforms.functional import pixel_spacing, resample_to_spacing
    from kneel_monai.visualize import draw_landmarks_overlay

    torch.set_num_threads(max(1, torch.get_num_threads()))
    predictor = KneelPredictor(*resolve_model_dirs(ns.model), device="cpu")
    with open(ns.images / "views.csv", newline="", encoding="utf-8") as f:
        views = [(row["file"], row["view"]) for row in csv.DictReader(f)]
    ns.out.mkdir(parents=True, exist_ok=True)
    rows, tiles = [], []
    tmp = Path(tempfile.mkdtemp(prefix="kneel_full_"))
    for name, view in tqdm(views, desc="radiographs", unit="image"):
        path = ns.images / name
        t0 = time.perf_counter()
        try:
            guess = guessed_spacing(path, view)
            if ns.jpeg_quality is not None:
                path, guess = recompressed(path, guess, tmp, ns.jpeg_quality)
            image = read_radiograph(path, None if guess is None else guess * ns.spacing_error)
            if ns.downscale != 1.0:  # a smaller export of the same field: same knees, coarser pixels
                image = resample_to_spacing(image, max(pixel_spacing(image.affine)) * ns.downscale)
            result = predictor.predict_image(image, str(path)).to_dict()
        except (ValueError, OSError) as err:  # a bad file is a row with its reason, the run goes on
            rows.append({"file": name, "view": view, "error": str(err)})
            continue
        seconds = time.perf_counter() - t0
        knees = result["knees"]
        eased = result["detection"].get("eased_partner")
        present = [s for s, k in knees.items() if k["present"]]
        offsets = stage1_offsets_mm(result, image.shape[-1])
        rows.append({"file": name, "view": view, "knees_found": len(present), "expected": EXPECTED_KNEES.get(view, 0),
                     "sides": {s: knees[s]["side_source"] for s in present},
                     "ok": sum(knees[s]["quality"] == "ok" for s in present), "verdict": result["view"]["verdict"],
                     "detection": result["detection"], "seconds": round(seconds, 2),
                     "knees": {s: knee_text(k, eased == s) for s, k in knees.items()}, "stage1_offset_mm": offsets,
                     "found": {s: {"quality": knees[s]["quality"], "shape_distance": knees[s].get("shape_distance"),
                                   "roi_zoom": knees[s].get("roi_zoom"), "side_source": knees[s]["side_source"],
                                   "mean_confidence": round(float(np.mean(knees[s]["confidence"])), 3),
                                   "eased_partner": eased == s}
                               for s in present},
                     "settings": {"downscale": ns.downscale, "jpeg_quality": ns.jpeg_quality,
                                  "spacing_error": ns.spacing_error},
                     "shape": list(image.shape[-2:]), "pixel_spacing_mm": result["pixel_spacing_mm"]})
        tile = tmp / f"{name}.png"
        caption = f"{name} [{view}] " + " ".join(f"{s}:{knees[s]['quality']}/{knees[s]['side_source']}"
                                                   for s in present) if present else f"{name} [{view}] no AP knee"
        draw_landmarks_overlay(image, {s: (k["landmarks_px"] if k["present"] else None) for s, k in knees.items()},
                               tile, title=caption, max_side_px=700)
        tiles.append(tile)
    contact_sheet(tiles, ns.sheet or ns.out / "contact_sheet.png")

    ap = [r for r in rows if r["view"] in EXPECTED_KNEES and "error" not in r]
    other = [r for r in rows if r["view"] not in EXPECTED_KNEES and "error" not in r]
    seconds = [r["seconds"] for r in rows if "seconds" in r]
    summary = {
        "ap_images": len(ap), "ap_knees_expected": sum(r["expected"] for r in ap),
        "ap_knees_found": sum(min(r["knees_found"], r["expected"]) for r in ap),
        "ap_images_too_many_knees": sum(r["knees_found"] > r["expected"] for r in ap),
        "single_ap_sides": {r["file"]: r["sides"] for r in ap if r["view"] == "single_ap"},
        "non_ap_images": len(other), "non_ap_with_a_knee_ok": sum(r["ok"] > 0 for r in other),
        "non_ap_with_a_knee_present": sum(r["knees_found"] > 0 for r in other),
        # the margin: the most knee-like answer on any non-AP film (a knee needs <= knee_shape_limit)
        "non_ap_best_shape_distance": min((r["detection"]["best_shape_distance"] for r in other
                                           if r["detection"].get("best_shape_distance") is not None), default=None),
        # stage 1's own aim on the bilateral films (a single-knee field's halves each hold half a knee)
        "stage1_offset_mm_bilateral": sorted(d for r in ap if r["view"] == "bilateral_ap"
                                             for d in r["stage1_offset_mm"].values()),
        # knees believed only as the other knee of a bilateral film (ScanSettings.partner_margin): file and side
        "eased_partners": [f"{r['file']} {s}" for r in rows if "error" not in r
                           for s, f in r["found"].items() if f["eased_partner"]],
        "failed_to_read": [r["file"] for r in rows if "error" in r],
        "median_seconds": float(np.median(seconds)) if seconds else None,
    }
    if ns.synthetic is not None:
        from kneel_monai.data.datalists import build_datalists
        from kneel_monai.training.evaluation import evaluate_pipeline

        lists = ns.out / "synthetic_lists"
        if not (lists / "roi_datalist.json").is_file():
            build_datalists(ns.synthetic.resolve()).write(lists)
        syn = evaluate_pipeline(predictor, lists / "roi_datalist.json", ns.out / "synthetic", progress=True)
        test_all = syn["tables"]["test"][0]
        summary["synthetic"] = {"n_knees": syn["n_knees"], "missed": syn["missed_knees"],
                                "false_positive": syn["false_positive_knees"],
                                "pck_2.5_mean": float(test_all["mean"][2.5]),
                                "outliers_pct": float(test_all["outliers"])}

    lines = ["| file | view | knees found / expected | R | L | verdict | stage 1 → knee (mm) | "
             "searched (local / scan starts) | most knee-like | s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['file']} | {r['view']} | unreadable: {r['error']} | | | | | | | |")
            continue
        det = r["detection"]
        best = det.get("best_shape_distance")
        lines.append(f"| {r['file']} | {r['view']} | {r['knees_found']} / {r['expected']} | {r['knees']['R']} | "
                     f"{r['knees']['L']} | {r['verdict']} | "
                     f"{' '.join(f'{k} {v:g}' for k, v in r['stage1_offset_mm'].items()) or '—'} | "
                     f"{det.get('local_starts', 0)} / {det['scan_starts']} | "
                     f"{'—' if best is None else f'{best:.2f}'} | {r['seconds']} |")
    lines += ["", "```", json.dumps(summary, indent=1), "```"]
    (ns.out / "full_radiographs.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (ns.out / "full_radiographs.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n",
                                                  encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
