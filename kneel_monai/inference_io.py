"""Run the two-stage predictor over files or folders and write what each face needs.

Per radiograph ``<name>`` (the file name without its image suffix) in ``out_dir``:

* ``<name>.json`` — :meth:`RadiographResult.to_dict` (landmarks in pixels and mm, confidences,
  absent knees with the reason, timings);
* ``<name>.png`` — an overlay (tibia red, femur green, ids);
* ``<name>.mrk.json`` — a 3D Slicer markups file (:mod:`kneel_monai.io.markups`).

A file that cannot be read or predicted is reported in the summary and the run goes on; the
summary is also written to ``out_dir/summary.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .io import read_radiograph
from .io.reading import has_dicom_preamble
from .io.markups import write_markups
from .visualize import draw_landmarks_overlay

__all__ = ["FORMATS", "IMAGE_SUFFIXES", "find_radiographs", "predict_paths"]

FORMATS = ("json", "png", "mrk")
#: file suffixes taken as radiographs when a folder is scanned (DICOM is also recognised by content)
IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nrrd", ".nhdr", ".nii",
                  ".nii.gz", ".mha", ".mhd")


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


def find_radiographs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Expand ``inputs`` (a file, a folder, or a list of them) into radiograph files.

    Folders are scanned recursively for files with an image suffix (:data:`IMAGE_SUFFIXES`) or
    DICOM content (OAI files have no extension); hidden files are skipped. Files named
    explicitly are always kept. Returns ``(files, problems)``, problems being inputs that do not
    exist.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items or any(not str(i).strip() for i in items):
        raise ValueError("no input given: name a radiograph file or a folder of them (input_dir)")
    files: list[Path] = []
    problems: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file() and not p.name.startswith(".") and (_image_suffix(p) or _is_dicom(p)):
                    files.append(p)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return list(dict.fromkeys(files)), problems


def _output_stem(path: Path, used: set[str]) -> str:
    suffix = _image_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}_{n}"
    used.add(candidate)
    return candidate


def predict_paths(predictor: Any, inputs: str | os.PathLike | Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                  formats: Sequence[str] = FORMATS, spacing_mm: float | tuple[float, float] | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Predict every radiograph in ``inputs`` and write ``formats`` into ``out_dir``.

    Args:
        predictor: a :class:`~kneel_monai.inference.KneelPredictor`.
        inputs: a radiograph file, a folder, or a list of them.
        formats: any of ``"json"``, ``"png"``, ``"mrk"``.
        spacing_mm: pixel spacing ``(row, col)`` or one number, for files without one (PNG);
            when given it overrides every file's own spacing.

    Returns:
        ``{"n_inputs", "n_ok", "n_failed", "out_dir", "results": [{"input", "outputs",
        "knees"}], "failed": [{"input", "error"}]}`` (also written to ``summary.json``).
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown output formats {unknown}; choose among {FORMATS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files, problems = find_radiographs(inputs)
    failed: list[dict[str, str]] = [{"input": p.split(": ")[0], "error": p} for p in problems]
    results: list[dict[str, Any]] = []
    used: set[str] = set()
    for index, path in enumerate(files):
        stem = _output_stem(path, used)
        try:
            t0 = time.perf_counter()
            image = read_radiograph(path, spacing_mm)
            read_s = time.perf_counter() - t0
            result = predictor.predict_image(image, str(path))
            result.timings_s = {"read": read_s, **result.timings_s}
            outputs: dict[str, str] = {}
            if "json" in formats:
                outputs["json"] = str(atomic_write_text(out / f"{stem}.json",
                                                        json.dumps(result.to_dict(), indent=1) + "\n"))
            if "png" in formats:
                knees = {s: (k.landmarks_px if k.present else None) for s, k in result.knees.items()}
                outputs["png"] = str(draw_landmarks_overlay(image, knees, out / f"{stem}.png", title=path.name))
            if "mrk" in formats:
                outputs["mrk"] = str(write_markups(result, out / f"{stem}.mrk.json"))
            knees_found = {s: k.present for s, k in result.knees.items()}
            results.append({"input": str(path), "outputs": outputs, "knees": knees_found})
            if progress:
                found = ", ".join(s for s, present in knees_found.items() if present) or "none"
                print(f"[{index + 1}/{len(files)}] {path.name}: knees {found}", flush=True)
        except Exception as err:  # noqa: BLE001 — one bad file must not stop a batch
            message = str(err) if str(path) in str(err) else f"{path}: {type(err).__name__}: {err}"
            failed.append({"input": str(path), "error": message})
            if progress:
                print(f"[{index + 1}/{len(files)}] {path.name}: FAILED — {message}", flush=True)
    summary = {"n_inputs": len(files) + len(problems), "n_ok": len(results), "n_failed": len(failed),
               "out_dir": str(out), "formats": list(formats), "results": results, "failed": failed}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary
