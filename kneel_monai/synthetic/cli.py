"""``kneel synth``: write a cohort of synthetic radiographs with ground truth.

The lead registers it in ``kneel_monai/cli.py`` with ``add_synth_parser(sub)``; the handler
returns an exit code like the other subcommands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_synth_parser", "run_synth"]


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_synth_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``synth`` subcommand on an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "synth",
        help="write synthetic bilateral PA knee radiographs with exact landmark ground truth",
        description="Generate synthetic bilateral PA knee radiographs (DICOM and/or 16-bit PNG) with one "
        "ground-truth JSON per image and a dataset.json index. Deterministic for --seed.",
    )
    p.add_argument("out_dir", help="output folder (created)")
    p.add_argument("--n", type=_positive_int, default=10, help="number of radiographs (default 10)")
    p.add_argument("--seed", type=_positive_int, default=0, help="cohort seed (default 0)")
    p.add_argument("--format", dest="fmt", choices=("dcm", "png", "mixed"), default="dcm",
                   help="dcm: varied DICOM (MONOCHROME1/2, 12-16 bit, DX/CR, compressed or not); png: 16-bit PNG; "
                   "mixed: both (default dcm)")
    p.add_argument("--single-knee-fraction", type=_fraction, default=0.1,
                   help="fraction of images with one knee absent (default 0.1)")
    p.add_argument("--tight-crop-fraction", type=_fraction, default=0.05,
                   help="fraction of bilateral images with a tight field (default 0.05)")
    p.add_argument("--spacing", type=float, default=None, metavar="MM",
                   help="pixel spacing in mm for every image (default: drawn per image, 0.139-0.2)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="image size in pixels for every image (default: drawn, 2000-2900 a side)")
    p.add_argument("--kl", type=int, choices=range(5), default=None, help="KL grade of every knee (default: drawn)")
    p.add_argument("--real-knees", metavar="DATALIST", default=None,
                   help="composite real knees into the images (for training stage 1 on real knee appearance): a "
                   "landmark datalist of registered real crops, e.g. kneel build-oai-crops' landmark_datalist.json")
    p.add_argument("--real-folds", type=int, nargs="+", default=[1], metavar="K",
                   help="the datalist folds whose knees are used (default 1: build-oai-crops' training part, so "
                   "that validation knees stay unseen)")
    p.add_argument("--real-knee-fraction", type=_fraction, default=0.8,
                   help="with --real-knees: fraction of images whose knees are replaced by real ones (default 0.8)")
    p.add_argument("--single-field-fraction", type=_fraction, default=0.0,
                   help="with --real-knees: fraction of bilateral images written as two single-knee fields side by "
                   "side (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_synth)
    return p


def run_synth(ns: argparse.Namespace) -> int:
    from .generate import generate_dataset

    try:
        real = None
        if ns.real_knees is not None:
            from .composite import read_real_knees

            real = read_real_knees(ns.real_knees, folds=ns.real_folds)
        index = generate_dataset(
            ns.out_dir,
            ns.n,
            ns.seed,
            fmt=ns.fmt,
            single_knee_fraction=ns.single_knee_fraction,
            tight_crop_fraction=ns.tight_crop_fraction,
            spacing_mm=ns.spacing,
            size=tuple(ns.size) if ns.size else None,
            kl=ns.kl,
            real_knees=real,
            real_knee_fraction=ns.real_knee_fraction,
            single_field_fraction=ns.single_field_fraction,
            progress=not ns.no_progress,
        )
    except (ValueError, OSError, KeyError) as err:  # a field too small for two knees, a bad datalist: one line
        print(f"kneel synth: error: {err}", file=sys.stderr)
        return 2
    items = json.loads(Path(index).read_text(encoding="utf-8"))["items"]
    n_dcm = sum(1 for it in items if it["format"] == "dcm")
    n_single = sum(1 for it in items if None in it["knees"].values())
    print(f"wrote {len(items)} radiographs ({n_dcm} DICOM, {len(items) - n_dcm} PNG; {n_single} single-knee) "
          f"and {index}")
    return 0


def add_synth_stage1_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``synth-stage1`` subcommand (the shipped stage-1 model's training set)."""
    p = subparsers.add_parser(
        "synth-stage1",
        help="write the shipped ROI model's training set: synthetic films with real knees composited in",
        description="Synthetic films with registered real knee crops composited in, and single-knee fields, in four "
        "parts (train, val, train_single, val_single) with roi_datalist.json for the bundle's training "
        "(--dataset_dir OUT). Deterministic; the defaults write the shipped ROI model's set. See docs/real_knees.md.",
    )
    p.add_argument("out_dir", help="output folder (created)")
    p.add_argument("--real-knees", metavar="DATALIST", required=True,
                   help="registered real knee crops: kneel build-oai-crops' landmark_datalist.json (fold 1 trains, "
                   "fold 0 validates)")
    p.add_argument("--n", type=int, nargs=4, default=[300, 60, 200, 40],
                   metavar=("TRAIN", "VAL", "SINGLE", "VAL_SINGLE"),
                   help="films per part (default 300 60 200 40)")
    p.add_argument("--seed", type=_positive_int, default=2_000_000, help="seed of the first film (default 2000000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_synth_stage1)
    return p


def run_synth_stage1(ns: argparse.Namespace) -> int:
    from .stage1_set import STAGE1_PARTS, write_stage1_set

    if any(n < 0 for n in ns.n):
        print(f"kneel synth-stage1: error: --n takes four counts >= 0, got {ns.n}", file=sys.stderr)
        return 2
    try:
        path = write_stage1_set(ns.out_dir, ns.real_knees, dict(zip((p[0] for p in STAGE1_PARTS), ns.n)), ns.seed,
                                progress=not ns.no_progress)
    except (ValueError, OSError, KeyError) as err:  # a bad or empty datalist: one line
        print(f"kneel synth-stage1: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {sum(ns.n)} films and {path}")
    return 0
