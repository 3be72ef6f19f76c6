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

Radiographs are read in worker processes (:class:`ReadAhead`) while the main process runs the networks;
at most a few radiographs are in memory at any time, so a cohort of any size streams.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write_text, remove_stale_temporaries
from .io import read_image
from .io.markups import write_markups
from .io.reading import FieldSize, ReadLimits
from .landmarks import NUM_LANDMARKS
from .measurements import MEASUREMENTS
from .run_plan import (
    IMAGE_SUFFIXES,
    PlannedInput,
    find_radiographs,
    outputs_of,
    plan_outputs,
    prediction_source,
    read_prediction,
    source_of,
)
from .visualize import draw_landmarks_overlay

__all__ = ["FORMATS", "IMAGE_SUFFIXES", "COHORT_COLUMNS", "find_radiographs", "plan_outputs", "predict_paths",
           "cohort_rows", "plan_run", "prepare_output_folder", "OutputsNotWritten", "ReadAhead"]

FORMATS = ("json", "csv", "png", "mrk")

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
# reading in worker processes
# ---------------------------------------------------------------------------------------------
class _RadiographReader:
    """Reads one radiograph per item; a failure is returned as a message, never raised."""

    def __init__(self, files: Sequence[Path], spacing_mm: Any, per_file: Sequence[Any] | None = None,
                 limits: ReadLimits | None = None, field: FieldSize | None = None) -> None:
        self.files, self.spacing_mm, self.limits, self.field = list(files), spacing_mm, limits, field
        self.per_file = list(per_file) if per_file is not None else [None] * len(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        t0 = time.perf_counter()
        try:
            # a CSV row's own spacing is the more specific one; the field size only serves files without one
            image = read_image(path, self.per_file[index] or self.spacing_mm, self.limits, self.field)
        except Exception as err:  # noqa: BLE001 — reported per file, the batch goes on
            return {"index": index, "error": _message(path, err)}
        return {"index": index, "image": image, "read_s": time.perf_counter() - t0}


def _one_thread_reader() -> None:
    # readers decode and resample a little; one thread each leaves the cores to the networks
    torch.set_num_threads(1)


class ReadAhead:
    """The items of a reader in order, read by ``workers`` processes a few files ahead of the networks
    (``workers=0``: in this process). A reading process that dies (killed, out of memory) does not
    end the run: the files it may have held are read again, each alone in a fresh process, and only
    one that kills that process too fails, with the reason; then reading goes on. ``restarts``
    counts the process pools replaced."""

    def __init__(self, reader: _RadiographReader, workers: int) -> None:
        self.reader, self.workers, self.restarts = reader, int(workers), 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.workers == 0:
            for i in range(len(self.reader)):
                yield self.reader[i]
            return
        todo = deque(range(len(self.reader)))
        while todo:
            window: deque[tuple[int, Future | None]] = deque()
            broken = False
            pool = ProcessPoolExecutor(self.workers, initializer=_one_thread_reader)
            try:
                while todo or window:
                    while todo and len(window) < 2 * self.workers:
                        i = todo.popleft()
                        try:
                            window.append((i, pool.submit(self.reader.__getitem__, i)))
                        except BrokenProcessPool:
                            window.append((i, None))
                    i, future = window[0]
                    try:
                        if future is None:
                            raise BrokenProcessPool
                        item = future.result()
                    except BrokenProcessPool:
                        broken = True
                        break
                    window.popleft()
                    yield item
            finally:
                pool.shutdown(wait=not broken, cancel_futures=True)
            if broken:
                self.restarts += 1
                for i, _ in window:  # the files in flight: each alone, so a culprit names itself
                    yield self._read_alone(i)

    def _read_alone(self, index: int) -> dict[str, Any]:
        pool = ProcessPoolExecutor(1, initializer=_one_thread_reader)
        try:
            return pool.submit(self.reader.__getitem__, index).result()
        except BrokenProcessPool:
            return {"index": index, "error": f"{self.reader.files[index]}: the process reading it died (killed, or "
                                             "out of memory); skipped"}
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def _message(path: Path, err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if str(path) in text else f"{path}: {type(err).__name__}: {text}"


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------
def _done_result(paths: dict[str, Path], source: Path) -> dict[str, Any] | None:
    """The prediction JSON of a radiograph already done (all its outputs there, same source), else None."""
    if not all(p.is_file() for p in paths.values()):
        return None
    data = read_prediction(paths["json"])
    return data if data is not None and prediction_source(data) == source_of(source) else None


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
                  progress: bool = True, overwrite: bool = False, workers: int = 0,
                  limits: ReadLimits | None = None,
                  plan: tuple[list[PlannedInput], list[str]] | None = None,
                  field: FieldSize | None = None) -> dict[str, Any]:
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
        field: the imaged field's width or height (:class:`~kneel_monai.io.reading.FieldSize`): each file
            without a spacing of its own (and without one from ``spacing_mm`` or its CSV row) gets the field
            over its own pixels, recorded as ``spacing_source`` ``field_width``/``field_height``.
        progress: a progress bar with ETA.
        overwrite: predict again radiographs whose outputs exist (default: skip them).
        workers: processes reading radiographs ahead of the networks (0: read in this process);
            one that dies fails at most the file it was reading (:class:`ReadAhead`).
        limits: what a radiograph may be (:class:`~kneel_monai.io.reading.ReadLimits`); larger files,
            spacings outside a radiograph's and huge fields fail with the reason before decoding.
        plan: ``plan_run(inputs, out_dir, formats)`` when the caller made it already (the CLI does, to refuse
            a bad ``--out`` before loading models): the inputs are not scanned, nor the output folder checked
            and cleaned, twice.

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
    planned, problems = plan if plan is not None else plan_run(inputs, out, formats)
    failed: list[dict[str, str]] = [{"input": p.split(": ")[0], "error": p} for p in problems]
    predictions: list[dict[str, Any]] = []  # every radiograph's JSON content, done now or before
    results: list[dict[str, Any]] = []
    pending: list[tuple[Path, str, dict[str, Path]]] = []
    row_spacings: list[tuple[float, float] | None] = []
    skipped = 0
    for path, stem, row_spacing in ((p.path, p.name, p.spacing_mm) for p in planned):
        paths = outputs_of(out, stem, formats)
        done = None if overwrite else _done_result(paths, path)
        if done is not None:
            predictions.append(done)
            skipped += 1
        else:
            pending.append((path, stem, paths))
            row_spacings.append(row_spacing)

    totals: dict[str, float] = {}
    started = time.perf_counter()
    loader = ReadAhead(_RadiographReader([p for p, _, _ in pending], spacing_mm, row_spacings, limits, field),
                       workers)
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
    missing = []  # run files that could not be written (read-only folder, disk full): said, never half-written
    if "csv" in formats:
        try:
            _write_cohort_csv(out / "cohort.csv", predictions, failed)
            summary["cohort_csv"] = str(out / "cohort.csv")
        except OSError as err:
            missing.append(f"{out / 'cohort.csv'}: {err.strerror or err}")
    try:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    except OSError as err:
        missing.append(f"{out / 'summary.json'}: {err.strerror or err}")
    if missing:
        raise OutputsNotWritten(summary, missing)
    if interrupted:
        raise KeyboardInterrupt(f"interrupted: {len(results)} radiograph(s) done in this run; run again to finish")
    return summary


class OutputsNotWritten(OSError):
    """The run finished but some of its own files could not be written; ``summary`` says what was done
    (every radiograph output listed there is complete) and ``missing`` which run files are absent."""

    def __init__(self, summary: dict[str, Any], missing: list[str]) -> None:
        super().__init__("could not write " + "; ".join(missing) + " (every per-radiograph output that was written "
                         "is complete)")
        self.summary, self.missing = summary, missing


def plan_run(inputs: str | os.PathLike | Sequence[str | os.PathLike], out_dir: str | os.PathLike,
             formats: Sequence[str] = FORMATS) -> tuple[list[PlannedInput], list[str]]:
    """What a run settles before a model is loaded or a radiograph read: each radiograph with its outputs
    (an ``out_dir`` that would replace inputs is refused), and the output folder proven writable and cleared
    of the temporaries a killed run left (:func:`prepare_output_folder`)."""
    plan = plan_outputs(inputs, out_dir, formats)
    prepare_output_folder(out_dir)
    return plan


def prepare_output_folder(out: str | os.PathLike) -> Path:
    """Create the output folder and prove it writable (before any model is loaded or radiograph read);
    remove temporary files a killed earlier run left there."""
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise ValueError(f"{out}: the output folder is a symbolic link to nothing; choose another --out")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is a file, not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / ".kneel-write-check", "")
        (out / ".kneel-write-check").unlink()
    except OSError as err:
        raise ValueError(f"{out}: cannot write the outputs there ({err.strerror or err})") from None
    remove_stale_temporaries(out)
    return out


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
    prediction["source"] = source_of(path)  # who the outputs belong to, however the path was spelled
    atomic_write_text(paths["json"], json.dumps(prediction, indent=1) + "\n")
    return prediction, timings
