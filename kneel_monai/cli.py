"""``kneel`` command line: each subcommand is a few lines over the library."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from .landmarks import SIDES

__all__ = ["main", "build_parser"]


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""


def _cmd_convert_release(ns: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .model_io import load_model
    from .release import convert_release

    written = convert_release(ns.src, ns.dst)
    src = Path(ns.src)
    worst = 0.0
    for model_dir in written:
        model = load_model(model_dir)
        args = model.config["network"]["args"]
        print(
            f"wrote {model_dir}  task={model.task} folds={len(model.networks)} "
            f"width={args['width']} depth={args['depth']} block={args['block']}/{args['inner_block']}"
        )
        if ns.verify:
            folder = src if (src / "session.pkl").is_file() else src / model_dir.name
            expected = folder / "expected.npz"
            if not expected.is_file():
                raise CommandError(f"--verify: {expected} not found")
            with np.load(expected, allow_pickle=False) as data:
                got = model.predict(torch.from_numpy(data["input"])).numpy()
                diff = float(np.abs(got - data["output"]).max())
            worst = max(worst, diff)
            print(f"  verify against {expected}: max |Δ| = {diff:.2e} (normalised coordinates)")
    if ns.verify and worst > ns.tolerance:
        raise CommandError(f"--verify failed: max |Δ| {worst:.2e} > tolerance {ns.tolerance:.0e}")
    return 0


def _print_bad(bad: list[dict]) -> None:
    if bad:
        print(f"skipped {len(bad)} file(s):")
        for item in bad:
            print(f"  {item['reason']}")


def _cmd_build_datalists(ns: argparse.Namespace) -> int:
    from .data import build_datalists

    lists = build_datalists(ns.root, n_folds=ns.folds, seed=ns.seed)
    roi_path, lm_path = lists.write(ns.out)
    print(f"{len(lists.roi)} radiographs, {len(lists.landmarks)} knees, {ns.folds} folds (seed {ns.seed})")
    print(f"wrote {roi_path}\nwrote {lm_path}")
    _print_bad(lists.bad_files)
    return 0


def _cmd_build_oai(ns: argparse.Namespace) -> int:
    from .data.oai import build_oai_dataset, default_annotation_csv

    report = build_oai_dataset(ns.oai_dir, ns.csv or default_annotation_csv(), ns.out, n_folds=ns.folds, seed=ns.seed)
    roi_path, lm_path = report.datalists.write(ns.out)
    print(f"{len(report.written)} radiographs matched, {len(report.datalists.landmarks)} knees")
    print(f"wrote {roi_path}\nwrote {lm_path}")
    for item in report.unmatched:
        print(f"  unmatched {item['subject_id']} {item['side']}: {item['reason']}")
    for item in report.ambiguous:
        print(f"  ambiguous {item['subject_id']} {item['side']}: {item['reason']}")
    _print_bad(report.datalists.bad_files)
    return 0


def _cmd_build_oai_crops(ns: argparse.Namespace) -> int:
    from .data.oai_crops import build_crop_dataset

    summary = build_crop_dataset(ns.crops_dir, ns.out, model=ns.model, synthetic=ns.synthetic or [], split=ns.split,
                                 device=ns.device, keep_failed=ns.keep_failed, report=True)
    out = Path(ns.out)
    print(f"round {summary['round']}: {summary['crops']} crops — train {summary['train']}, validation "
          f"{summary['validation']}, test {summary['test']}; {summary['synthetic_knees']} synthetic knees")
    for item in summary["refused"]:
        print(f"  refused {item['key']}: {item['reason']}")
    if summary["excluded"]:
        kept = " (kept in the datalists: --keep-failed)" if ns.keep_failed else " (left out of the datalists)"
        print(f"  {len(summary['excluded'])} crops whose registration does not hold{kept}, e.g.:")
        for key, reason in list(summary["excluded"].items())[:5]:
            print(f"    {key}: {reason}")
    for path in summary["report"]:
        print(f"wrote {path}")
    print(f"wrote {out / 'landmark_datalist.json'}\nwrote {out / 'landmark_test_datalist.json'}")
    return 0


def _cmd_info(ns: argparse.Namespace) -> int:
    from .io import describe_radiograph

    status = 0
    for path in ns.files:
        try:
            info = describe_radiograph(path)
        except Exception as err:  # noqa: BLE001 — one line per unreadable file, go on with the rest
            print(f"{path}: error: {err}")
            status = 1
            continue
        print(path)
        for key in ("format", "shape", "pixel_spacing_mm", "spacing_source", "photometric_interpretation",
                    "transfer_syntax", "bits_stored", "modality", "patient_id", "laterality", "view_position",
                    "patient_orientation"):
            if info.get(key) is not None:
                print(f"  {key:<27} {info[key]}")
        for problem in info.get("problems", []):
            print(f"  problem: {problem}")
            status = 1
    return status


def _cmd_predict(ns: argparse.Namespace) -> int:
    from .cohort import FORMATS, OutputsNotWritten, plan_run, predict_paths
    from .inference import KneelPredictor, resolve_model_dirs
    from .io.reading import FieldSize, ReadLimits

    # every usage error before a model is loaded or a file read
    formats = [f.strip() for f in ns.format.split(",") if f.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise CommandError(f"--format: {'unknown ' + ', '.join(unknown) if unknown else 'no format given'}; "
                           f"choose among {','.join(FORMATS)}")
    spacing = None
    if ns.spacing:
        if len(ns.spacing) > 2 or not all(math.isfinite(v) and v > 0 for v in ns.spacing):
            raise CommandError(f"--spacing: give one or two positive numbers in mm (row col), got "
                               f"{' '.join(str(v) for v in ns.spacing)}")
        spacing = ns.spacing[0] if len(ns.spacing) == 1 else tuple(ns.spacing)
    field = None
    if ns.field_width_mm is not None or ns.field_height_mm is not None:
        if spacing is not None:
            raise CommandError("--spacing gives every file one spacing; --field-width-mm/--field-height-mm give "
                               "each file without one its own: use one of them")
        try:
            field = FieldSize(ns.field_width_mm, ns.field_height_mm)
        except ValueError as err:
            raise CommandError(f"--field-width-mm/--field-height-mm: {err}") from None
    if not (math.isfinite(ns.min_confidence) and 0 <= ns.min_confidence <= 1):
        raise CommandError(f"--min-confidence: a number from 0 to 1, got {ns.min_confidence}")
    if ns.workers is not None and ns.workers < 0:
        raise CommandError(f"--workers: 0 (read in this process) or more, got {ns.workers}")
    if ns.mc_dropout < 0 or ns.mc_dropout == 1:
        raise CommandError(f"--mc-dropout: 0 (off) or at least 2, got {ns.mc_dropout}")
    if not (math.isfinite(ns.max_megapixels) and ns.max_megapixels > 0):
        raise CommandError(f"--max-megapixels: a positive number, got {ns.max_megapixels}")
    limits = ReadLimits(max_pixels=int(ns.max_megapixels * 1e6))
    workers = ns.workers if ns.workers is not None else (0 if (os.cpu_count() or 1) <= 2 else 2)
    plan = plan_run(ns.inputs, ns.out, formats)  # refuses an --out that would replace inputs or cannot be written
    roi_dir, landmark_dir = resolve_model_dirs(ns.model, ns.roi_model)
    try:
        predictor = KneelPredictor(roi_dir, landmark_dir, device=ns.device, refine=not ns.no_refine,
                                   min_confidence=ns.min_confidence, ensemble=ns.ensemble, mc_samples=ns.mc_dropout,
                                   single_knee_side=ns.single_knee_side)
    except RuntimeError as err:  # e.g. --device cuda without a GPU
        raise CommandError(str(err)) from None
    print(f"models: {roi_dir} + {landmark_dir} on {predictor.device}; refinement "
          f"{'off' if ns.no_refine else 'on'}; writing {','.join(formats)} to {ns.out}", flush=True)
    try:
        summary = predict_paths(predictor, ns.inputs, ns.out, formats=formats, spacing_mm=spacing,
                                progress=not ns.no_progress, overwrite=ns.overwrite, workers=workers, limits=limits,
                                plan=plan, field=field)
    except KeyboardInterrupt as err:
        print(f"\nkneel predict: {err or 'interrupted'}; every output written is complete", file=sys.stderr)
        return 130
    except OutputsNotWritten as err:
        summary = err.summary
        print(f"kneel predict: error: {err}", file=sys.stderr)
        print(f"done: {summary['n_ok']} radiograph(s) predicted, {summary['n_failed']} failed", file=sys.stderr)
        for item in summary["failed"]:
            print(f"  FAILED {item['error']}", file=sys.stderr)
        return 2
    print(f"done: {summary['n_ok']} radiograph(s) predicted, {summary['n_skipped']} already done (skipped), "
          f"{summary['n_failed']} failed; {summary['n_knees']} knees found, {summary['n_absent']} absent, "
          f"{summary['n_check']} flagged for a look (quality 'check')")
    if summary.get("cohort_csv"):
        print(f"cohort table: {summary['cohort_csv']}")
    for item in summary["failed"]:
        print(f"  FAILED {item['error']}")
    return 1 if summary["n_failed"] else 0


def _cmd_worker(ns: argparse.Namespace) -> int:
    from .inference import KneelPredictor, resolve_model_dirs
    from .worker import run_worker

    roi_dir, landmark_dir = resolve_model_dirs(ns.model, None)
    try:
        predictor = KneelPredictor(roi_dir, landmark_dir, device=ns.device, refine=not ns.no_refine)
    except RuntimeError as err:  # e.g. --device cuda without a GPU
        raise CommandError(str(err)) from None
    return run_worker(predictor, [str(roi_dir), str(landmark_dir)])


def _cmd_label_server(ns: argparse.Namespace) -> int:
    import shutil
    import subprocess

    exe = shutil.which("monailabel")
    if exe is None:
        raise CommandError("monailabel is not installed; see docs/label.md (pip install -e '.[label]', then "
                           "pip install --no-deps monailabel==0.8.5 pydicom-seg==0.4.1)")
    app = Path(ns.app) if ns.app else Path(__file__).parent / "monailabel_app"  # installed with the package
    if not (app / "main.py").is_file():
        raise CommandError(f"{app}: not the MONAI Label app folder (no main.py); pass --app")
    cmd = [exe, "start_server", "--app", str(app), "--studies", ns.studies, "--host", ns.host, "--port", str(ns.port),
           "--conf", "models", "kneel_landmarks"]
    for key, value in (("state_dir", ns.state_dir), ("device", ns.device), ("model", ns.model)):
        if value:
            cmd += ["--conf", key, value]
    env = {**os.environ}
    env.setdefault("MONAI_LABEL_TRACKING_ENABLED", "false")
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd, env=env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kneel", description="Knee landmark localisation (KNEEL) tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    conv = sub.add_parser(
        "convert-release",
        help="convert the original KNEEL release's snapshots to this project's model format",
        description="Convert a release snapshot folder (fold_*.pth + session.pkl + mean_std.npy), or a folder "
        "of them (lc/, hc/), to kneel-monai model directories. Pickles are read with a restricted loader.",
    )
    conv.add_argument("src", help="release snapshot folder, or a folder holding several")
    conv.add_argument("dst", help="output model directory (one sub-folder per snapshot folder when several)")
    conv.add_argument("--verify", action="store_true", help="check the outputs against each folder's expected.npz")
    conv.add_argument("--tolerance", type=float, default=1e-5, help="max |Δ| allowed by --verify (default 1e-5)")
    conv.set_defaults(func=_cmd_convert_release)

    pred = sub.add_parser(
        "predict", help="landmarks, measurements and quality for radiographs: files, folders or CSV lists",
        description="Run the two-stage pipeline (with refinement) over radiographs and write per radiograph a "
        "JSON, an overlay PNG and a 3D Slicer .mrk.json, plus one cohort CSV (a row per knee). Re-running skips "
        "radiographs already done. Exit code 1 when any input failed (each gets a one-line reason).",
    )
    pred.add_argument("inputs", nargs="+", help="radiograph files, folders (searched recursively) or .csv lists "
                      "(a path column, and optionally a spacing_mm column for JPEG/PNG files)")
    pred.add_argument("--out", required=True, help="output folder")
    pred.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                      help="auto: the GPU when there is one (default)")
    pred.add_argument("--model", help="a bundle folder, a folder with roi/ + landmarks/ (or converted release lc/ + "
                      "hc/), or one model directory (default: the shipped models)")
    pred.add_argument("--roi-model", help="the ROI model directory (overrides the one --model implies)")
    pred.add_argument("--no-refine", action="store_true", help="skip the refinement pass (faster, 1-stage)")
    pred.add_argument("--ensemble", action="store_true", help="average every fold of multi-fold models "
                      "(default: the first fold only)")
    pred.add_argument("--mc-dropout", type=int, default=0, metavar="N",
                      help="N >= 2 dropout passes per knee: per-landmark spread in mm (uncertainty); default off")
    pred.add_argument("--format", default=",".join(("json", "csv", "png", "mrk")),
                      help="comma-separated outputs among json,csv,png,mrk (default all; the JSON is always written)")
    pred.add_argument("--spacing", type=float, nargs="+", metavar="MM",
                      help="pixel spacing (one value, or row col) for files without one, e.g. PNG; overrides files'")
    pred.add_argument("--field-width-mm", type=float, metavar="MM",
                      help="for files without a spacing (JPEG/PNG exports of any size): the imaged field's width, "
                           "e.g. 390 for a bilateral knee film; each file's spacing is this over its own width")
    pred.add_argument("--field-height-mm", type=float, metavar="MM",
                      help="the same from the field's height, e.g. 270 for a single-knee film")
    pred.add_argument("--min-confidence", type=float, default=0.25,
                      help="a knee whose mean landmark confidence is below this is reported absent (default 0.25)")
    pred.add_argument("--single-knee-side", choices=SIDES,
                      help="side of a lone centred knee when neither its DICOM laterality nor its anatomy decides "
                      "(default: the anatomy's guess, flagged check)")
    pred.add_argument("--workers", type=int, default=None,
                      help="reader processes ahead of the networks (default: 0 on a machine with 2 cores or fewer, "
                      "where a reader only competes with the networks; else 2)")
    pred.add_argument("--overwrite", action="store_true", help="predict again radiographs already done")
    pred.add_argument("--max-megapixels", type=float, default=100.0,
                      help="refuse files with more pixels than this, from their header (default 100: a knee "
                           "radiograph has about 5-15)")
    pred.add_argument("--no-progress", action="store_true", help="no progress bar")
    pred.set_defaults(func=_cmd_predict)

    info = sub.add_parser("info", help="print what the reader sees in radiograph files (size, spacing, tags)")
    info.add_argument("files", nargs="+")
    info.set_defaults(func=_cmd_info)

    lists = sub.add_parser("build-datalists", help="radiographs + ground-truth JSONs → datalists for both stages")
    lists.add_argument("root", help="folder searched recursively for ground-truth JSON files")
    lists.add_argument("out", help="folder for roi_datalist.json and landmark_datalist.json")
    lists.add_argument("--folds", type=int, default=5)
    lists.add_argument("--seed", type=int, default=42)
    lists.set_defaults(func=_cmd_build_datalists)

    oai = sub.add_parser("build-oai", help="OAI DICOM folder + KNEEL annotation CSV → ground truth + datalists")
    oai.add_argument("oai_dir", help="folder holding the OAI DICOMs (any layout)")
    oai.add_argument("csv", nargs="?", default=None,
                     help="the KNEEL annotation CSV (default: the one shipped with the package)")
    oai.add_argument("out", help="output folder for ground-truth JSONs and datalists")
    oai.add_argument("--folds", type=int, default=5)
    oai.add_argument("--seed", type=int, default=42)
    oai.set_defaults(func=_cmd_build_oai)

    crops = sub.add_parser(
        "build-oai-crops", help="real knee crops + KNEEL annotations → one more registration round + datalists",
        description="Registers each crop's annotation (robust similarity onto a landmark model's prediction), "
                    "then writes landmark_datalist.json (train + validation parts, plus synthetic knees) and "
                    "landmark_test_datalist.json (the test part) with the project's split. Without --model and "
                    "no earlier round in OUT: round 0, the set's constant mapping. See docs/real_knees.md.")
    crops.add_argument("crops_dir", help="the crop set: <key>.png files and reference.json")
    crops.add_argument("out", help="output folder (registration.json, datalists, pictures); re-use it for later rounds")
    crops.add_argument("--model", help="landmark model directory whose predictions drive this round")
    crops.add_argument("--synthetic", action="append", metavar="DIR",
                       help="a `kneel synth` folder whose knees join the training part (repeatable)")
    crops.add_argument("--split", help="split file (default: the project's, kneel_monai/data/oai_crops_split.json)")
    crops.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    crops.add_argument("--keep-failed", action="store_true",
                       help="keep crops whose fit fails in the datalists (intermediate rounds only)")
    crops.set_defaults(func=_cmd_build_oai_crops)

    label = sub.add_parser("label-server", help="start the MONAI Label app (active annotation) on a studies folder "
                           "or DICOMweb URL", description="Runs `monailabel start_server --app monailabel_app "
                           "--studies STUDIES --conf models kneel_landmarks` (see docs/label.md).")
    label.add_argument("studies", help="folder of radiographs, or a DICOMweb URL")
    label.add_argument("--host", default="127.0.0.1")
    label.add_argument("--port", type=int, default=8000)
    label.add_argument("--state-dir", help="trained models and scores (default: a per-user cache folder for "
                                           "these studies, ~/.cache/kneel-monai/label/<id>)")
    label.add_argument("--device", choices=("auto", "cpu", "cuda"))
    label.add_argument("--model", help="starting models (as for `kneel predict --model`; default the shipped ones)")
    label.add_argument("--app", help="the app folder (default: monailabel_app beside the package)")
    label.set_defaults(func=_cmd_label_server)

    work = sub.add_parser("worker", help="a warm prediction process: one JSON request per stdin line, one JSON answer "
                          "per stdout line (the 3D Slicer module keeps one; see kneel_monai/worker.py)")
    work.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    work.add_argument("--model", help="as for kneel predict (default: the shipped models)")
    work.add_argument("--no-refine", action="store_true", help="skip the refinement pass")
    work.set_defaults(func=_cmd_worker)

    from .synthetic.cli import add_synth_parser, add_synth_stage1_parser  # they live with the generator

    add_synth_parser(sub)
    add_synth_stage1_parser(sub)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(build_parser().parse_args(args))
    except KeyboardInterrupt:  # Ctrl-C anywhere, while importing torch at start-up too: one line, no traceback
        command = next((a for a in args if not a.startswith("-")), "")
        print(f"kneel {command}: interrupted" if command else "kneel: interrupted", file=sys.stderr)
        return 130


def _run(ns: argparse.Namespace) -> int:
    from .model_io import ModelFormatError
    from .release import UnsafePickleError

    try:
        return ns.func(ns)
    except (CommandError, ModelFormatError, UnsafePickleError, OSError, ValueError) as err:
        print(f"kneel {ns.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
