"""Run the two-stage predictor over a cohort — files, folders, CSV lists — and write what each face needs.

Per radiograph, in ``out_dir`` (a folder input's sub-folders are mirrored; the name is the file's
without its image suffix):

* ``<name>.json`` — :meth:`RadiographResult.to_dict` (landmarks in pixels and mm, confidences,
  measurements, quality flag, absent knees with the reason, timings). Always written, and written
  **last**: it marks the radiograph done, so a re-run skips it (unless ``overwrite``);
* ``<name>.png`` — an overlay (tibia red, femur green, ids);
* ``<name>.mrk.json`` — a 3D Slicer markups file (:mod:`kneel_monai.io.markups`).

For the whole run: ``cohort.csv`` (one row per knee, :data:`COHORT_COLUMNS`; failed files get a row
with the reason) and ``summary.json``. Every file is written atomically (temp file + rename), so an
interruption leaves only complete outputs, and the next run finishes the rest.

Radiographs are read in ``DataLoader`` worker processes while the main process runs the networks;
at most a few radiographs are in memory at any time, so a cohort of any size streams.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .atomic import atomic_write_text
from .io import read_radiograph
from .io.markups import write_markups
from .io.reading import has_dicom_preamble
from .landmarks import NUM_LANDMARKS
from .measurements import MEASUREMENTS
from .visualize import draw_landmarks_overlay

__all__ = ["FORMATS", "IMAGE_SUFFIXES", "COHORT_COLUMNS", "find_radiographs", "plan_outputs", "predict_paths",
           "cohort_rows"]

FORMATS = ("json", "csv", "png", "mrk")
#: file suffixes taken as radiographs when a folder is scanned (DICOM is also recognised by content)
IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nrrd", ".nhdr", ".nii",
                  ".nii.gz", ".mha", ".mhd")
#: columns a CSV list of inputs may name its paths with (else its first column)
CSV_PATH_COLUMNS = ("path", "file", "image", "filename")
CSV_SPACING_COLUMNS = ("spacing_mm", "spacing", "pixel_spacing_mm")

COHORT_COLUMNS: tuple[str, ...] = (
    ("file", "side", "status", "reason", "quality", "quality_reasons", "side_source", "shape_distance",
     "mean_confidence", "min_confidence", "pixel_spacing_row_mm", "pixel_spacing_col_mm", "spacing_source")
    + tuple(MEASUREMENTS)
    + tuple(f"{axis}{i}_px" for i in range(NUM_LANDMARKS) for axis in "xy")
    + tuple(f"{axis}{i}_mm" for i in range(NUM_LANDMARKS) for axis in "xy")
    + tuple(f"confidence{i}" for i in range(NUM_LANDMARKS))
    + tuple(f"spread{i}_mm" for i in range(NUM_LANDMARKS))
)


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return has_dicom_preamble(head)


def _image_suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), "")


def _parse_spacing(text: str) -> tuple[float, float] | None:
    """A CSV cell: empty → None; one number (mm) or two (row, col) separated by a space, ';' or 'x'."""
    text = text.strip()
    if not text:
        return None
    parts = [p for p in re.split(r"[\s;xX]+", text) if p]
    values = [float(p) for p in parts]  # ValueError for garbage
    if len(values) not in (1, 2) or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(text)
    return (values[0], values[-1])


def _csv_rows(path: Path) -> tuple[list[tuple[Path, tuple[float, float] | None]], list[str]]:
    """The radiographs a CSV list names (relative paths against the CSV's folder), each with the
    pixel spacing of its row's ``spacing_mm``/``spacing``/``pixel_spacing_mm`` column (JPEG/PNG carry
    none); a row whose spacing is not a positive number (or two) is a problem naming it, not a file."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return [], []
    header = [h.strip().lower() for h in rows[0]]
    column = next((header.index(c) for c in CSV_PATH_COLUMNS if c in header), None)
    spacing_column = next((header.index(c) for c in CSV_SPACING_COLUMNS if c in header), None)
    body = rows[1:] if column is not None else rows
    first_line = 2 if column is not None else 1
    column = column or 0
    out, problems = [], []
    for n, row in enumerate(body, start=first_line):
        if len(row) > column and row[column].strip():
            p = Path(row[column].strip())
            p = p if p.is_absolute() else path.parent / p
            cell = row[spacing_column] if spacing_column is not None and len(row) > spacing_column else ""
            try:
                out.append((p, _parse_spacing(cell)))
            except ValueError:
                problems.append(f"{p}: bad pixel spacing {cell.strip()!r} in {path} line {n} (expected a positive "
                                "number in mm, or 'row col')")
    return out, problems


def find_radiographs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Expand ``inputs`` (files, folders, ``.csv`` lists, or a list of them) into radiograph files.

    Folders are scanned recursively for files with an image suffix (:data:`IMAGE_SUFFIXES`) or
    DICOM content (OAI files have no extension); hidden files are skipped. Files named
    explicitly (also through a CSV list: a ``path``/``file``/``image`` column, else the first) are
    always kept. Returns ``(files, problems)``, problems being inputs that do not exist.
    """
    planned, problems = _expand(inputs)
    return [p for p, _, _ in planned], problems


def _expand(inputs: str | os.PathLike | Iterable[str | os.PathLike]
            ) -> tuple[list[tuple[Path, Path | None, tuple[float, float] | None]], list[str]]:
    """``[(file, the folder input it was found under or None, a CSV row's spacing or None)]`` and the problems."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items or any(not str(i).strip() for i in items):
        raise ValueError("no input given: name a radiograph file, a folder of them or a CSV list")
    found: list[tuple[Path, Path | None, tuple[float, float] | None]] = []
    problems: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file() and not p.name.startswith(".") and (_image_suffix(p) or _is_dicom(p)):
                    found.append((p, path, None))
        elif path.is_file() and path.suffix.lower() == ".csv":
            listed, bad_rows = _csv_rows(path)
            problems += bad_rows
            for p, spacing in listed:
                if p.is_file():
                    found.append((p, None, spacing))
                else:
                    problems.append(f"{p}: no such file (listed in {path})")
        elif path.is_file():
            found.append((path, None, None))
        else:
            problems.append(f"{path}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for p, root, spacing in found:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append((p, root, spacing))
    return unique, problems


def plan_outputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]
                 ) -> tuple[list[tuple[Path, str, tuple[float, float] | None]], list[str]]:
    """Each radiograph with its output name (no suffix, ``/`` for mirrored sub-folders) and the pixel
    spacing its CSV row gives (or None), and the problems.

    Files found under a folder input keep their path relative to it (so equal names in different
    sub-folders never collide and a re-run maps every file to the same outputs); other files use
    their name, with ``_2``, ``_3``… for repeats in input order.
    """
    found, problems = _expand(inputs)
    used: set[str] = set()
    planned = []
    for path, root, spacing in found:
        suffix = _image_suffix(path)
        rel = path.relative_to(root).as_posix() if root is not None else path.name
        stem = rel[: len(rel) - len(suffix)] if suffix else rel
        candidate, n = stem, 1
        while candidate.lower() in used:
            n += 1
            candidate = f"{stem}_{n}"
        used.add(candidate.lower())
        planned.append((path, candidate, spacing))
    return planned, problems


# ---------------------------------------------------------------------------------------------
# reading in worker processes
# ---------------------------------------------------------------------------------------------
class _RadiographReader(Dataset):
    """Reads one radiograph per item; a failure is returned as a message, never raised."""

    def __init__(self, files: Sequence[Path], spacing_mm: Any, per_file: Sequence[Any] | None = None) -> None:
        self.files, self.spacing_mm = list(files), spacing_mm
        self.per_file = list(per_file) if per_file is not None else [None] * len(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        t0 = time.perf_counter()
        try:
            # a CSV row's own spacing is the more specific one
            image = read_radiograph(path, self.per_file[index] or self.spacing_mm)
        except Exception as err:  # noqa: BLE001 — reported per file, the batch goes on
            return {"index": index, "error": _message(path, err)}
        return {"index": index, "image": image, "read_s": time.perf_counter() - t0}


def _keep(item: Any) -> Any:
    return item


def _one_thread_reader(worker_id: int) -> None:
    # readers decode and resample a little; one thread each leaves the cores to the networks
    torch.set_num_threads(1)


def _message(path: Path, err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if str(path) in text else f"{path}: {type(err).__name__}: {text}"


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------
def _outputs_of(out: Path, stem: str, formats: Sequence[str]) -> dict[str, Path]:
    paths = {"json": out / f"{stem}.json"}
    if "png" in formats:
        paths["png"] = out / f"{stem}.png"
    if "mrk" in formats:
        paths["mrk"] = out / f"{stem}.mrk.json"
    return paths


def _done_result(paths: dict[str, Path], source: Path) -> dict[str, Any] | None:
    """The prediction JSON of a radiograph already done (all its outputs there, same source), else None."""
    if not all(p.is_file() for p in paths.values()):
        return None
    try:
        data = json.loads(paths["json"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("format") != "kneel-monai/prediction" or data.get("image") != str(source):
        return None
    return data


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not np.isfinite(value) else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def cohort_rows(prediction: dict[str, Any]) -> list[dict[str, str]]:
    """The :data:`COHORT_COLUMNS` rows (one per knee side) of a prediction JSON's content."""
    rows = []
    spacing = prediction.get("pixel_spacing_mm") or [None, None]
    for side, knee in prediction["knees"].items():
        row: dict[str, Any] = {"file": prediction["image"], "side": side,
                               "status": "ok" if knee["present"] else "absent", "reason": knee.get("reason", ""),
                               "quality": knee.get("quality", ""),
                               "quality_reasons": "; ".join(knee.get("quality_reasons") or []),
                               "side_source": knee.get("side_source", ""), "shape_distance": knee.get("shape_distance"),
                               "pixel_spacing_row_mm": spacing[0], "pixel_spacing_col_mm": spacing[1],
                               "spacing_source": prediction.get("spacing_source", "")}
        if knee["present"]:
            conf = np.asarray(knee["confidence"], dtype=float)
            row.update({"mean_confidence": float(conf.mean()), "min_confidence": float(conf.min())})
            row.update({k: float(v) for k, v in (knee.get("measurements") or {}).items()})
            for i, ((xp, yp), (xm, ym)) in enumerate(zip(knee["landmarks_px"], knee["landmarks_mm"])):
                row.update({f"x{i}_px": float(xp), f"y{i}_px": float(yp), f"x{i}_mm": float(xm), f"y{i}_mm": float(ym),
                            f"confidence{i}": float(conf[i])})
            for i, s in enumerate(knee.get("spread_mm") or []):
                row[f"spread{i}_mm"] = float(s)
        rows.append({c: _fmt(row.get(c)) for c in COHORT_COLUMNS})
    return rows


def _write_cohort_csv(path: Path, predictions: Sequence[dict[str, Any]], failed: Sequence[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COHORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for prediction in predictions:
        writer.writerows(cohort_rows(prediction))
    for item in failed:
        writer.writerow({c: "" for c in COHORT_COLUMNS} | {"file": item["input"], "status": "failed",
                                                          "reason": item["error"]})
    atomic_write_text(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def predict_paths(predictor: Any, inputs: str | os.PathLike | Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                  formats: Sequence[str] = FORMATS, spacing_mm: float | tuple[float, float] | None = None,
                  progress: bool = True, overwrite: bool = False, workers: int = 0) -> dict[str, Any]:
    """Predict every radiograph in ``inputs`` and write ``formats`` into ``out_dir``.

    Args:
        predictor: a :class:`~kneel_monai.inference.KneelPredictor`.
        inputs: radiograph files, folders (recursive) or ``.csv`` lists, or one of them.
        formats: any of ``"json"``, ``"csv"``, ``"png"``, ``"mrk"`` (the per-radiograph JSON is
            written in any case: it marks a radiograph done and feeds the cohort CSV).
        spacing_mm: pixel spacing ``(row, col)`` or one number, for files without one (PNG);
            when given it overrides every file's own spacing. A CSV list may give each row its own
            (a ``spacing_mm``/``spacing``/``pixel_spacing_mm`` column: one number in mm, or
            ``"row col"``), which wins over this one; a row with a bad value fails with its reason.
        progress: a progress bar with ETA.
        overwrite: predict again radiographs whose outputs exist (default: skip them).
        workers: ``DataLoader`` worker processes reading radiographs ahead of the networks
            (0: read in this process).

    Returns:
        The summary written to ``summary.json``: counts (``n_inputs``, ``n_ok`` done now,
        ``n_skipped`` done before, ``n_failed``, ``n_knees``, ``n_absent``, ``n_check``), the
        ``failed`` inputs with a one-line reason each, per-stage ``timings_s`` totals and the
        ``results`` of this run.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown output formats {unknown}; choose among {', '.join(FORMATS)}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    planned, problems = plan_outputs(inputs)
    failed: list[dict[str, str]] = [{"input": p.split(": ")[0], "error": p} for p in problems]
    predictions: list[dict[str, Any]] = []  # every radiograph's JSON content, done now or before
    results: list[dict[str, Any]] = []
    pending: list[tuple[Path, str, dict[str, Path]]] = []
    row_spacings: list[tuple[float, float] | None] = []
    skipped = 0
    for path, stem, row_spacing in planned:
        paths = _outputs_of(out, stem, formats)
        done = None if overwrite else _done_result(paths, path)
        if done is not None:
            predictions.append(done)
            skipped += 1
        else:
            pending.append((path, stem, paths))
            row_spacings.append(row_spacing)

    totals: dict[str, float] = {}
    started = time.perf_counter()
    loader = DataLoader(_RadiographReader([p for p, _, _ in pending], spacing_mm, row_spacings), batch_size=None,
                        shuffle=False,
                        num_workers=workers, collate_fn=_keep, prefetch_factor=2 if workers else None,
                        worker_init_fn=_one_thread_reader if workers else None)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pending), desc="kneel predict", unit="radiograph", dynamic_ncols=True)
    interrupted, processed = False, 0
    try:
        for item in loader:
            path, stem, paths = pending[item["index"]]
            if "error" in item:
                failed.append({"input": str(path), "error": item["error"]})
                if bar is not None:
                    bar.write(f"FAILED {item['error']}")
            else:
                try:
                    prediction, timings = _predict_one(predictor, item["image"], path, paths, formats)
                    timings = {"read": item["read_s"], **timings}
                    for k, v in timings.items():
                        totals[k] = totals.get(k, 0.0) + v
                    predictions.append(prediction)
                    results.append({"input": str(path), "outputs": {k: str(v) for k, v in paths.items()},
                                    "knees": {s: k["present"] for s, k in prediction["knees"].items()}})
                except Exception as err:  # noqa: BLE001 — one bad file must not stop a cohort
                    failed.append({"input": str(path), "error": _message(path, err)})
                    if bar is not None:
                        bar.write(f"FAILED {failed[-1]['error']}")
            processed += 1
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()

    knees = [k for p in predictions for k in p["knees"].values()]
    summary = {"n_inputs": len(planned) + len(problems), "n_ok": len(results), "n_skipped": skipped,
               "n_failed": len(failed), "n_pending": len(pending) - processed,
               "n_knees": sum(k["present"] for k in knees), "n_absent": sum(not k["present"] for k in knees),
               "n_check": sum(k.get("quality") == "check" for k in knees), "interrupted": interrupted,
               "out_dir": str(out), "formats": list(formats), "wall_s": round(time.perf_counter() - started, 3),
               "timings_s": {k: round(v, 3) for k, v in totals.items()}, "failed": failed, "results": results}
    if "csv" in formats:
        _write_cohort_csv(out / "cohort.csv", predictions, failed)
        summary["cohort_csv"] = str(out / "cohort.csv")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    if interrupted:
        raise KeyboardInterrupt(f"interrupted: {len(results)} radiograph(s) done in this run; run again to finish")
    return summary


def _predict_one(predictor: Any, image: Any, path: Path, paths: dict[str, Path], formats: Sequence[str]
                 ) -> tuple[dict[str, Any], dict[str, float]]:
    """Predict one radiograph and write its outputs, the JSON last. Returns its JSON content and timings."""
    result = predictor.predict_image(image, str(path))
    t0 = time.perf_counter()
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    if "png" in paths:
        knees = {s: (k.landmarks_px if k.present else None) for s, k in result.knees.items()}
        draw_landmarks_overlay(image, knees, paths["png"], title=path.name)
    if "mrk" in paths:
        write_markups(result, paths["mrk"])
    timings = dict(result.timings_s)
    timings["write"] = time.perf_counter() - t0
    result.timings_s = timings
    prediction = result.to_dict()
    atomic_write_text(paths["json"], json.dumps(prediction, indent=1) + "\n")
    return prediction, timings
