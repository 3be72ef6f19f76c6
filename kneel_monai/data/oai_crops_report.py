"""Pictures and a table of a crop-set registration: does it converge, what spacings, what it looks like.

* ``registration_rounds.png`` — per round: the median fit residual per crop (box plot) and how far the
  registered landmarks moved since the round before;
* ``registration_spacing.png`` — the distribution of the estimated pixel spacings (last round);
* ``registration_overlays.png`` — sample crops with the registered annotation of every round;
* ``registration_rounds.md`` — the same figures as a table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write, atomic_write_text
from .oai_crops import CropRecord, annotation_in_crop, read_split

__all__ = ["round_table", "write_registration_report"]


def round_table(registration: dict[str, Any], split: dict[str, str]) -> list[dict[str, Any]]:
    """One row per round and split part: residual and movement percentiles, crops whose fit holds."""
    rows = []
    for rnd in registration["rounds"]:
        if rnd["model"] is None:
            continue
        for part in ("train", "validation", "test", "all"):
            crops = [v for k, v in rnd["crops"].items() if part == "all" or split.get(k) == part]
            if not crops:
                continue
            res = np.array([c["median_residual_mm"] for c in crops])
            shift = np.array([c["shift_mm"] for c in crops if c.get("shift_mm") is not None])
            spacing = np.array([c["spacing_mm"] for c in crops])
            rows.append({"round": rnd["round"], "part": part, "crops": len(crops),
                         "residual_median_mm": float(np.median(res)), "residual_p90_mm": float(np.percentile(res, 90)),
                         "shift_median_mm": float(np.median(shift)) if shift.size else None,
                         "shift_p90_mm": float(np.percentile(shift, 90)) if shift.size else None,
                         "spacing_median_mm": float(np.median(spacing)),
                         "spacing_p5_p95_mm": [float(np.percentile(spacing, 5)), float(np.percentile(spacing, 95))],
                         "ok": int(sum(c["ok"] for c in crops))})
    return rows


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| round | part | crops | residual median / p90 (mm) | moved since previous median / p90 (mm) | "
             "spacing median [p5, p95] (mm) | fit holds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        moved = "—" if r["shift_median_mm"] is None else f"{r['shift_median_mm']:.2f} / {r['shift_p90_mm']:.2f}"
        lines.append(f"| {r['round']} | {r['part']} | {r['crops']} | {r['residual_median_mm']:.2f} / "
                     f"{r['residual_p90_mm']:.2f} | {moved} | {r['spacing_median_mm']:.3f} "
                     f"[{r['spacing_p5_p95_mm'][0]:.3f}, {r['spacing_p5_p95_mm'][1]:.3f}] | {r['ok']} |")
    return "\n".join(lines) + "\n"


def write_registration_report(registration: dict[str, Any], records: list[CropRecord], out_dir: str | os.PathLike,
                              split_path: str | os.PathLike | None = None, n_overlays: int = 8) -> list[Path]:
    """Write the pictures and table (see the module doc) into ``out_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    out = Path(out_dir)
    split = read_split(split_path)
    rows = round_table(registration, split)
    written = [atomic_write_text(out / "registration_rounds.md", _markdown(rows))]
    model_rounds = [r for r in registration["rounds"] if r["model"] is not None]

    def save(fig, name: str) -> Path:
        path = atomic_write(out / name, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
        plt.close(fig)
        return path

    if model_rounds:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        labels = [f"round {r['round']}" for r in model_rounds]
        axes[0].boxplot([[c["median_residual_mm"] for c in r["crops"].values()] for r in model_rounds],
                        showfliers=False)
        axes[0].set_xticks(range(1, len(labels) + 1), labels)
        axes[0].set_ylabel("median fit residual per crop (mm)")
        axes[0].set_title("annotation vs model prediction after the fit")
        axes[1].boxplot([[c["shift_mm"] for c in r["crops"].values() if c.get("shift_mm") is not None]
                         for r in model_rounds], showfliers=False)
        axes[1].set_xticks(range(1, len(labels) + 1), labels)
        axes[1].set_ylabel("mean landmark move since previous round (mm)")
        axes[1].set_title("pose change (round 1: from the crude mapping)")
        fig.tight_layout()
        written.append(save(fig, "registration_rounds.png"))

        last = model_rounds[-1]["crops"]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.hist([c["spacing_mm"] for c in last.values()], bins=30, color="#4477aa")
        ax.axvline(0.45, color="k", ls="--", lw=1, label="nominal 0.45 mm")
        ax.set_xlabel("estimated crop pixel spacing (mm)")
        ax.set_ylabel("crops")
        ax.set_title(f"round {model_rounds[-1]['round']}: {len(last)} crops")
        ax.legend()
        fig.tight_layout()
        written.append(save(fig, "registration_spacing.png"))

    by_key = {r.key: r for r in records}
    keys = sorted(k for k in registration["rounds"][-1]["crops"] if k in by_key)
    keys = keys[:: max(1, len(keys) // n_overlays)][:n_overlays]
    if keys:
        colours = ["#ffdd00", "#00ccff", "#ff55ff", "#ff3030", "#30ff30", "#ff8800"]
        fig, axes = plt.subplots(2, (len(keys) + 1) // 2, figsize=(3.6 * ((len(keys) + 1) // 2), 4.6))
        for ax, key in zip(np.ravel(axes), keys):
            rec = by_key[key]
            ax.imshow(np.asarray(Image.open(rec.image).convert("L")), cmap="gray")
            for i, rnd in enumerate(registration["rounds"]):
                pts = annotation_in_crop(rec, np.asarray(rnd["crops"][key]["pose"]))
                style = dict(color=colours[i % len(colours)], lw=0.9, ms=2.5)
                ax.plot(pts[:9, 0], pts[:9, 1], ".-", label=f"round {rnd['round']}", **style)
                ax.plot(pts[9:, 0], pts[9:, 1], ".--", **style)
            last = registration["rounds"][-1]["crops"][key]
            joint = annotation_in_crop(rec, np.asarray(last["pose"]))
            ax.set_ylim(min(joint[:, 1].max() + 45, 223.5), max(joint[:, 1].min() - 45, -0.5))  # the joint band
            ax.set_title(f"{key} KL{rec.kl} {last['spacing_mm']:.3f} mm/px", fontsize=8)
            ax.axis("off")
        for ax in np.ravel(axes)[len(keys):]:
            ax.axis("off")
        np.ravel(axes)[0].legend(fontsize=6, loc="upper left")
        fig.suptitle("registered annotation per round (tibia solid, femur dashed)", fontsize=9)
        fig.tight_layout()
        written.append(save(fig, "registration_overlays.png"))
    return written
