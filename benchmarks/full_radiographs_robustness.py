"""Which knees of the real films stay found when the films change the way unseen ones would.

Reads several ``eval_full_radiographs.py`` outputs of the same films under different settings (as read;
``--downscale``, ``--jpeg-quality``, ``--spacing-error``) and writes

* a table per setting: AP knees found, non-AP films with a knee present / ``ok``, the most knee-like
  answer on a non-AP film (the margin to the knee-shape limit), median seconds;
* a table and a picture per AP knee and setting: found or not, its shape distance and quality — the
  knees found in every setting are the pipeline's robust ones, those found in some sit near a limit.

    python benchmarks/full_radiographs_robustness.py runs/robustness/* \\
        --picture docs/images/real_full_robustness.png --out benchmarks/results/full_radiographs_robustness
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

AP_VIEWS = ("bilateral_ap", "single_ap")


def load(run: Path) -> tuple[dict, list[dict]]:
    data = json.loads((run / "full_radiographs.json").read_text(encoding="utf-8"))
    return data["summary"], data["rows"]


def knee_grid(runs: dict[str, list[dict]]) -> dict[tuple[str, str], dict[str, dict | None]]:
    """``{(file, side): {setting: found knee record or None}}`` over every AP knee found in any setting."""
    grid: dict[tuple[str, str], dict[str, dict | None]] = {}
    for setting, rows in runs.items():
        for row in rows:
            if row["view"] in AP_VIEWS and "found" in row:
                for side, knee in row["found"].items():
                    grid.setdefault((row["file"], side), {})[setting] = knee
    return {key: {s: found.get(s) for s in runs} for key, found in sorted(grid.items())}


def draw(grid: dict, settings: list[str], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    colours = {"ok": "#4caf50", "check": "#ffb300", None: "#d0d0d0"}
    fig = Figure(figsize=(1.3 * len(settings) + 2.4, 0.32 * len(grid) + 1.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (key, found) in enumerate(grid.items()):
        for j, setting in enumerate(settings):
            knee = found[setting]
            ax.add_patch(Rectangle((j, i), 0.95, 0.9, color=colours[knee["quality"] if knee else None]))
            text = "—" if knee is None else f"{knee['shape_distance']:.1f}"
            ax.text(j + 0.47, i + 0.45, text, ha="center", va="center", fontsize=8)
    ax.set_xlim(0, len(settings))
    ax.set_ylim(len(grid), 0)
    ax.set_xticks([j + 0.47 for j in range(len(settings))], settings, fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([i + 0.45 for i in range(len(grid))], [f"{f} {s}" for f, s in grid], fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title("AP knees of the development films: shape distance of the knee found (limit 6); "
                 "green ok, amber check, grey not found", fontsize=8, pad=24)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="eval_full_radiographs.py output folders")
    parser.add_argument("--picture", type=Path, help="PNG of the knee × setting grid")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "full_radiographs_robustness")
    ns = parser.parse_args()

    summaries, rows = {}, {}
    for run in ns.runs:
        summaries[run.name], rows[run.name] = load(run)
    settings = list(rows)
    grid = knee_grid(rows)
    lines = ["| setting | AP knees found | non-AP films with a knee present / ok | most knee-like non-AP answer | "
             "median s |", "|---|---|---|---|---|"]
    for setting, summary in summaries.items():
        closest = min(((r["detection"]["best_shape_distance"], r["file"]) for r in rows[setting]
                       if r["view"] not in AP_VIEWS and r.get("detection", {}).get("best_shape_distance") is not None),
                      default=(None, None))
        lines.append(f"| {setting} | {summary['ap_knees_found']} of {summary['ap_knees_expected']} | "
                     f"{summary['non_ap_with_a_knee_present']} / {summary['non_ap_with_a_knee_ok']} | "
                     f"{closest[0]} ({closest[1]}) | {summary['median_seconds']:.2f} |")
    lines += ["", "| knee | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    for (file, side), found in grid.items():
        cells = ["—" if k is None else f"{k['quality']} {k['shape_distance']:.1f}" for k in found.values()]
        lines.append(f"| {file} {side} | " + " | ".join(cells) + " |")
    every = [key for key, found in grid.items() if all(found.values())]
    some = [key for key, found in grid.items() if not all(found.values())]
    lines += ["", f"found in every setting: {len(every)}; in some: {len(some)} "
              f"({', '.join(f'{f} {s}' for f, s in some)})"]
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "robustness.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (ns.out / "robustness.json").write_text(json.dumps(
        {"settings": settings, "summaries": summaries,
         "knees": {f"{f} {s}": found for (f, s), found in grid.items()}}, indent=1) + "\n", encoding="utf-8")
    if ns.picture is not None:
        draw(grid, settings, ns.picture)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
