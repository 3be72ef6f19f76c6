"""The side of a lone knee, decided by its anatomy, on real knees whose side is known.

Every crop of the OAI crop set (single-knee PNGs, ~100 mm fields, ``reference.json`` gives each
knee's side; left knees are not mirrored) is run through the whole pipeline as a single-knee image
— read at the set's nominal 0.45 mm, no DICOM laterality, no ``--single-knee-side`` — so the side is
the anatomy's (``kneel_monai.side``). Per part of the project's split (validation: choose; test:
report; train: the landmark model has seen these knees, the fibula rule has not): how many sides were
called sure and how many of those were wrong, how many were left to check; and, from the same
evidence, each piece alone (the fibula; the heat-maps, also with 0.4.3's 0.02 margin).

With ``--films FOLDER`` (a folder with ``views.csv``, as ``eval_full_radiographs.py`` reads) the knees of
every bilateral AP film are cut out as single-knee fields (the knee found on the film in the middle,
180 mm wide, the film's full height) and run the same way: real knees imaged unlike OAI's, whose side
is known from where they lay on the film (radiological convention).

    python benchmarks/eval_single_knee_side.py --crops <crop set folder> [--part validation] [--films <folder>]

Writes ``<out>/single_knee_side.json`` (summary + one row per crop), ``<out>/single_knee_side.md``
(the table it prints) and ``<out>/single_knee_side.png`` (the fibula evidence by true side, and the
crops the rule called wrongly or left to check, with its boxes drawn).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

PARTS = ("validation", "test", "train")


def run(crops: Path, parts: tuple[str, ...], spacing_mm: float, limit: int | None, split_path: Path | None = None,
        progress: bool = True) -> list[dict]:
    from tqdm import tqdm

    from kneel_monai.data.oai_crops import read_crop_reference, read_split
    from kneel_monai.inference import KneelPredictor, default_model_dirs

    records, problems = read_crop_reference(crops)
    for p in problems:
        print(f"skipped {p['key']}: {p['reason']}")
    split = read_split(split_path)
    chosen = [r for r in records if split.get(r.key) in parts][:limit]
    predictor = KneelPredictor(*default_model_dirs(), device="cpu")
    rows = []
    for rec in tqdm(chosen, desc="single-knee sides", unit="knee", disable=not progress):
        result = predictor.predict_file(rec.image, spacing_mm)
        present = [k for k in result.knees.values() if k.present]
        evidence = result.detection.get("side_evidence") or {}
        row = {"key": rec.key, "part": split[rec.key], "side": rec.side, "kl": rec.kl, "knees": len(present),
               "image": str(rec.image), "fibula": evidence.get("fibula"), "confidence": evidence.get("confidence")}
        if len(present) == 1:
            knee = present[0]
            row.update(called=knee.side, source=knee.side_source, quality=knee.quality,
                       landmarks_px=np.asarray(knee.landmarks_px).round(2).tolist())
        rows.append(row)
    return rows


def run_films(folder: Path, progress: bool = True, field_mm: float = 180.0,
              places: tuple[float, ...] = (0.5,)) -> list[dict]:
    """Each knee the pipeline finds on a bilateral AP film, cut out as a single-knee field ``field_mm`` wide and
    run again: with the knee at each of ``places`` (fractions of the field's width; 0.5: in the middle)."""
    import csv

    from eval_full_radiographs import guessed_spacing
    from tqdm import tqdm

    from kneel_monai.image import AffineImage
    from kneel_monai.inference import KneelPredictor, default_model_dirs
    from kneel_monai.io.reading import read_image
    from kneel_monai.transforms.functional import pixel_spacing

    with open(folder / "views.csv", newline="", encoding="utf-8") as f:
        films = [r["file"] for r in csv.DictReader(f) if r["view"] == "bilateral_ap"]
    predictor = KneelPredictor(*default_model_dirs(), device="cpu")
    rows = []
    for name in tqdm(films, desc="bilateral films", unit="film", disable=not progress):
        image = AffineImage.of(read_image(folder / name, guessed_spacing(folder / name, "bilateral_ap")))
        width_px = int(round(field_mm / pixel_spacing(image.affine)[1]))
        film = predictor.predict_image(image, name)
        for (side, knee), place in [(k, p) for k in film.knees.items() for p in places]:
            if not knee.present:
                continue
            x = int(round(knee.centre_px[0]))
            x0 = max(x - int(round(place * width_px)), 0)
            x1 = min(x0 + width_px, image.shape[-1])
            field = AffineImage(image.as_tensor()[..., x0:x1], image.affine.clone(), dict(image.meta))
            field.affine[:2, 2] += field.affine[:2, 0] * x0  # the same mm for the same pixels
            field.meta.pop("laterality", None)
            result = predictor.predict_image(field, f"{name} {side}")
            present = [k for k in result.knees.values() if k.present]
            evidence = result.detection.get("side_evidence") or {}
            centred = place == 0.5
            key = f"{name} {side}" if centred else f"{name} {side} @{place:g}"
            part = "films" if centred else "films off-centre"
            row = {"key": key, "part": part, "side": side, "kl": None, "knees": len(present), "place": place,
                   "image": str(folder / name), "x0": x0, "fibula": evidence.get("fibula"),
                   "confidence": evidence.get("confidence"), "film_quality": knee.quality}
            if len(present) == 1:
                k = present[0]
                row.update(called=k.side, source=k.side_source, quality=k.quality,
                           landmarks_px=(np.asarray(k.landmarks_px) + [x0, 0]).round(2).tolist())
            rows.append(row)
    return rows


def summarise(rows: list[dict], part: str | None) -> dict:
    sel = [r for r in rows if part is None or r["part"] == part]
    lone = [r for r in sel if r["knees"] == 1 and r.get("source") in ("anatomy", "anatomy_uncertain")]
    sure = [r for r in lone if r["source"] == "anatomy"]
    unsure = [r for r in lone if r["source"] == "anatomy_uncertain"]
    fib = [r for r in lone if r["fibula"] is not None]
    heat = [r for r in lone if r["confidence"]]
    heat_called = [r for r in heat if abs(r["confidence"]["R"] - r["confidence"]["L"]) >= 0.02]

    def heat_side(r: dict) -> str:
        return max(r["confidence"], key=r["confidence"].get)

    placed = [r for r in sel if r["knees"] == 1 and r.get("source") == "image_position"]
    return {"part": part or "all", "knees": len(sel), "one_knee_found": len(lone),
            # a lone knee's side from where it lies (one knee of a bilateral film): how often, how often wrong
            "by_position": len(placed), "by_position_wrong": sum(r["called"] != r["side"] for r in placed),
            "other_answers": len(sel) - len(lone),
            "sure": len(sure), "sure_wrong": sum(r["called"] != r["side"] for r in sure),
            "to_check": len(unsure), "to_check_right": sum(r["called"] == r["side"] for r in unsure),
            "fibula_seen": len(fib), "fibula_alone_right": sum((r["fibula"] > 0) == (r["side"] == "R") for r in fib),
            "heatmaps_alone_right": sum(heat_side(r) == r["side"] for r in heat), "heatmaps_knees": len(heat),
            "heatmaps_margin_called": len(heat_called),
            "heatmaps_margin_wrong": sum(heat_side(r) != r["side"] for r in heat_called)}


def table(summaries: list[dict]) -> str:
    lines = ["| part | knees | side by position / wrong | side by anatomy | sides called sure | sure but wrong | "
             "left to check (guess right) | fibula alone right | heat-maps alone right | heat-maps alone, margin 0.02: "
             "called / wrong |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s['part']} | {s['knees']} | {s['by_position']} / **{s['by_position_wrong']}** | "
                     f"{s['one_knee_found']} | {s['sure']} | **{s['sure_wrong']}** | "
                     f"{s['to_check']} ({s['to_check_right']}) | {s['fibula_alone_right']} of {s['fibula_seen']} | "
                     f"{s['heatmaps_alone_right']} of {s['heatmaps_knees']} | "
                     f"{s['heatmaps_margin_called']} / {s['heatmaps_margin_wrong']} |")
    return "\n".join(lines)


def picture(rows: list[dict], path: Path, spacing_mm: float, per_row: int = 6) -> None:
    """The fibula evidence of the crops by true side; below, the crops called wrongly or left to check, then
    the film knees (wrong first), each with the landmarks and the three boxes (image left, image right, tibia)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from kneel_monai.io.reading import read_image
    from kneel_monai.side import fibula_boxes

    lone = [r for r in rows if r["knees"] == 1 and r.get("source") in ("anatomy", "anatomy_uncertain")]
    crops = [r for r in lone if not r["part"].startswith("films")]
    films = [r for r in lone if r["part"] == "films"]
    doubtful = sorted((r for r in crops if r["called"] != r["side"] or r["source"] == "anatomy_uncertain"),
                      key=lambda r: r["called"] == r["side"])[:per_row]
    film_rows = sorted(films, key=lambda r: r["called"] == r["side"])[:per_row]
    panels = [p for p in (doubtful, film_rows) if p]
    fig = plt.figure(figsize=(2.5 * per_row, 2.6 * (1 + len(panels))))
    ax = fig.add_subplot(1 + len(panels), 1, 1)
    for side, colour in (("R", "tab:blue"), ("L", "tab:orange")):
        values = [r["fibula"] for r in crops if r["side"] == side and r["fibula"] is not None]
        ax.hist(values, bins=40, alpha=0.6, color=colour, label=f"{side} crops ({len(values)})")
    for r in films:  # film knees as ticks under the histogram
        if r["fibula"] is not None:
            ax.plot(r["fibula"], 0, "|", ms=14, mew=2, color="tab:blue" if r["side"] == "R" else "tab:orange")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("fibula evidence (> 0: fibular head on the image's left = a right knee); ticks: film knees")
    ax.legend(fontsize=8)
    for row_i, panel in enumerate(panels):
        for i, r in enumerate(panel):
            a = fig.add_subplot(1 + len(panels), per_row, per_row * (row_i + 1) + 1 + i)
            img = np.asarray(read_image(r["image"], spacing_mm)).squeeze()
            pts = np.asarray(r["landmarks_px"])
            a.imshow(img, cmap="gray")
            a.plot(pts[:, 0], pts[:, 1], ".", ms=3, color="yellow")
            for (x0, x1, y0, y1), colour in zip(fibula_boxes(pts), ("cyan", "magenta", "lime")):
                a.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1))
            width = float(np.linalg.norm(pts[8] - pts[0]))
            a.set_xlim(pts[4, 0] - 0.85 * width, pts[4, 0] + 0.85 * width)
            a.set_ylim(pts[4, 1] + 0.9 * width, pts[4, 1] - 0.6 * width)
            wrong = r["called"] != r["side"]
            fib = "unseen" if r["fibula"] is None else f"{r['fibula']:+.2f}"
            a.set_title(f"{r['key']}: {r['side']}, called {r['called']}\n{r['source']}, fibula {fib}", fontsize=7,
                        color="red" if wrong else "black")
            a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=Path, required=True, help="the crop set folder (reference.json + PNGs)")
    parser.add_argument("--part", action="append", choices=PARTS,
                        help="part(s) of the project's split (repeatable; default all three)")
    parser.add_argument("--split", type=Path, help="the crop split file (default: the project's shipped split)")
    parser.add_argument("--films", type=Path, help="a folder with views.csv: its bilateral AP films' knees too")
    parser.add_argument("--off-centre", action="store_true",
                        help="with --films: each knee also at a quarter and three quarters of its field's width")
    parser.add_argument("--spacing", type=float, default=0.45, help="pixel spacing the crops are read at (mm)")
    parser.add_argument("--limit", type=int, help="only the first N crops (a quick look)")
    parser.add_argument("--replot", action="store_true", help="table and picture from <out>'s JSON, no new run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "single_knee_side")
    ns = parser.parse_args()

    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    parts = tuple(ns.part or PARTS)
    t0 = time.perf_counter()
    saved = ns.out / "single_knee_side.json"
    if ns.replot:  # the table and picture again from a finished run
        rows = [r for r in json.loads(saved.read_text(encoding="utf-8"))["rows"]
                if r["part"] in parts + ("films", "films off-centre")]
    else:
        places = (0.5, 0.25, 0.75) if ns.off_centre else (0.5,)
        rows = (run(ns.crops, parts, ns.spacing, ns.limit, ns.split)
                + (run_films(ns.films, places=places) if ns.films else []))
    summaries = [summarise(rows, p) for p in parts if any(r["part"] == p for r in rows)]
    if len(summaries) > 1:
        summaries.append(summarise([r for r in rows if not r["part"].startswith("films")], None))
        summaries[-1]["part"] = "all crops"
    for films in ("films", "films off-centre"):
        if any(r["part"] == films for r in rows):
            summaries.append(summarise(rows, films))
    text = table(summaries)
    print(text)
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "single_knee_side.md").write_text(text + "\n", encoding="utf-8")
    if not ns.replot:
        saved.write_text(json.dumps({"spacing_mm": ns.spacing, "seconds": round(time.perf_counter() - t0, 1),
                                     "summary": summaries, "rows": rows}, indent=1), encoding="utf-8")
    picture(rows, ns.out / "single_knee_side.png", ns.spacing)
    print(f"wrote {ns.out}/single_knee_side.{{md,json,png}}")


if __name__ == "__main__":
    main()
