"""What a prediction run reads and writes: inputs expanded into radiograph files, each with a stable
output name, checked so that no output can ever replace an input.

Rules (``kneel predict``, the bundle's inference and the Slicer runner share them):

* **Inputs**: files, folders (searched recursively; hidden files, and the output folder when it lies
  inside an input folder, are skipped; unreadable sub-folders and dangling links are problems named
  in the run's failures) and ``.csv`` lists (a ``path``/``file``/``image``/``filename``/``filepath``
  column, else the first; an optional per-row spacing column). A CSV list that is not UTF-8 is read
  as Latin-1; one that cannot be read is a problem naming it, and the other inputs go on.
* **Names**: a file found under a folder input keeps its path relative to that folder (so equal
  names in different sub-folders never collide); a file named directly keeps its name. The suffix is
  dropped. A name that two inputs of one run share, that a run file uses (``summary``, ``cohort``),
  or whose outputs already belong to another radiograph gets a stable tag: ``_`` and 8 hex digits of
  the input's resolved path — the same for ``knee.dcm`` and ``/abs/knee.dcm``, in any order.
* **Safety**: the output folder may not be an input folder, and no planned output may be an input
  file; both are refused before anything is read or written.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .io.reading import has_dicom_preamble
from .results import PREDICTION_FORMAT

__all__ = ["IMAGE_SUFFIXES", "RUN_FILES", "PlannedInput", "find_radiographs", "plan_outputs", "outputs_of",
           "check_output_folder", "source_of", "read_prediction", "prediction_source"]

#: file suffixes taken as radiographs when a folder is scanned (DICOM is also recognised by content)
IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nrrd", ".nhdr", ".nii",
                  ".nii.gz", ".mha", ".mhd")
#: columns a CSV list of inputs may name its paths with (else its first column)
CSV_PATH_COLUMNS = ("path", "file", "image", "filename", "filepath", "file_path", "image_path")
CSV_SPACING_COLUMNS = ("spacing_mm", "spacing", "pixel_spacing_mm")
#: the files of the run itself: no radiograph's outputs may take these names
RUN_FILES = ("summary.json", "cohort.csv")
_RESERVED_STEMS = {name.split(".")[0] for name in RUN_FILES}


@dataclass(frozen=True)
class PlannedInput:
    path: Path
    name: str  # output name without suffix; "/" for mirrored sub-folders
    spacing_mm: tuple[float, float] | None  # a CSV row's own spacing


def source_of(path: str | os.PathLike) -> str:
    """The identity of an input: its resolved absolute path (how it was spelled does not matter)."""
    return str(Path(path).resolve())


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


def _read_csv_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:  # spreadsheet exports are often Latin-1/Windows-1252
        return data.decode("latin-1")


def _csv_rows(path: Path) -> tuple[list[tuple[Path, tuple[float, float] | None]], list[str]]:
    """The radiographs a CSV list names (relative paths against the CSV's folder), each with the
    pixel spacing of its row's ``spacing_mm``/``spacing``/``pixel_spacing_mm`` column (JPEG/PNG carry
    none); a row whose spacing is not a positive number (or two) is a problem naming it, not a file."""
    try:
        rows = list(csv.reader(_csv_lines(_read_csv_text(path))))
    except (OSError, csv.Error) as err:
        return [], [f"{path}: cannot read this CSV list ({err}); its radiographs were not processed"]
    if not rows:
        return [], []
    header = [h.strip().lower() for h in rows[0]]
    column = next((header.index(c) for c in CSV_PATH_COLUMNS if c in header), None)
    spacing_column = next((header.index(c) for c in CSV_SPACING_COLUMNS if c in header), None)
    body = rows[1:] if column is not None or spacing_column is not None else rows
    first_line = 2 if body is not rows else 1
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


def _csv_lines(text: str) -> list[str]:
    """``text`` as lines for :mod:`csv` (which refuses NUL characters: they become a clear problem)."""
    if "\0" in text:
        raise csv.Error("it holds NUL characters (a binary file?)")
    return text.splitlines(keepends=True)


def _inside(path: Path, resolved_folder: Path) -> bool:
    try:
        path.resolve().relative_to(resolved_folder)
        return True
    except ValueError:
        return False


def _expand(inputs: str | os.PathLike | Iterable[str | os.PathLike], exclude: Path | None = None
            ) -> tuple[list[tuple[Path, Path | None, tuple[float, float] | None]], list[str]]:
    """``[(file, the folder input it was found under or None, a CSV row's spacing or None)]`` and the problems.
    Files under ``exclude`` (the output folder) are not taken from folder scans."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items or any(not str(i).strip() for i in items):
        raise ValueError("no input given: name a radiograph file, a folder of them or a CSV list")
    found: list[tuple[Path, Path | None, tuple[float, float] | None]] = []
    problems: list[str] = []
    excluded = exclude.resolve() if exclude is not None else None

    def walk_error(err: OSError) -> None:
        problems.append(f"{err.filename}: cannot read this folder ({err.strerror or err}); its files were skipped")

    for item in items:
        path = Path(item)
        if path.is_dir():
            for folder, dirs, files in os.walk(path, onerror=walk_error):
                here = Path(folder)
                dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                                 and not (excluded is not None and _inside(here / d, excluded)))
                for name in sorted(files):
                    p = here / name
                    if name.startswith("."):
                        continue
                    if not p.is_file():
                        if p.is_symlink():
                            problems.append(f"{p}: a link to nothing (dangling symbolic link); skipped")
                        continue
                    if _image_suffix(p) or _is_dicom(p):
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
        elif path.exists():
            problems.append(f"{path}: not a regular file or folder (a pipe, socket or device?); skipped")
        else:
            problems.append(f"{path}: no such file or folder")
    seen: set[str] = set()
    unique = []
    for p, root, spacing in found:
        if source_of(p) not in seen:
            seen.add(source_of(p))
            unique.append((p, root, spacing))
    return unique, problems


def find_radiographs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Expand ``inputs`` (files, folders, ``.csv`` lists, or a list of them) into radiograph files.

    Folders are scanned recursively for files with an image suffix (:data:`IMAGE_SUFFIXES`) or
    DICOM content (OAI files have no extension); hidden files are skipped. Files named
    explicitly (also through a CSV list: a ``path``/``file``/``image`` column, else the first) are
    always kept. Returns ``(files, problems)``, problems being inputs that do not exist.
    """
    planned, problems = _expand(inputs)
    return [p for p, _, _ in planned], problems


def outputs_of(out: Path, name: str, formats: Sequence[str]) -> dict[str, Path]:
    """The files a radiograph named ``name`` gets in ``out``: its JSON always, PNG and markups by format."""
    paths = {"json": out / f"{name}.json"}
    if "png" in formats:
        paths["png"] = out / f"{name}.png"
    if "mrk" in formats:
        paths["mrk"] = out / f"{name}.mrk.json"
    return paths


def read_prediction(json_path: Path) -> dict | None:
    """A prediction JSON's content (``kneel-monai/prediction``); None when there is none, or it is unreadable."""
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == PREDICTION_FORMAT else None


def prediction_source(prediction: dict) -> str:
    """The input a prediction belongs to (its recorded ``source``; older files: their ``image`` resolved)."""
    return str(prediction.get("source") or source_of(prediction.get("image", "")))


def _owner(json_path: Path) -> str | None:
    """The source of the radiograph whose prediction JSON this is (None: no such JSON, or unreadable)."""
    data = read_prediction(json_path)
    return None if data is None else prediction_source(data)


def _stable_name(name: str, source: str, shared_in_run: bool, out: Path | None) -> str:
    """``name``, or its tagged form when another input (of this run, or whose outputs are already in
    ``out``) or a run file claims it; outputs already written for this input (``source``) keep their name."""
    tagged = f"{name}_{hashlib.sha1(source.encode('utf-8')).hexdigest()[:8]}"
    if out is not None:
        plain_owner = _owner(out / f"{name}.json")
        if plain_owner == source:
            return name
        if _owner(out / f"{tagged}.json") == source:
            return tagged
        if plain_owner is not None:
            return tagged
    reserved = "/" not in name and name.lower() in _RESERVED_STEMS
    return tagged if shared_in_run or reserved else name


def check_output_folder(inputs: str | os.PathLike | Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> None:
    """Refuse an output folder that is one of the input folders (its overlays would be read back as
    radiographs, and outputs could replace inputs)."""
    if not str(out_dir).strip():
        raise ValueError("--out is empty: name an output folder")
    out = Path(out_dir)
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    for item in items:
        if Path(item).is_dir() and source_of(item) == source_of(out):
            raise ValueError(f"the output folder {out} is an input folder: outputs (overlay PNGs, JSONs) would sit "
                             "among the radiographs and could replace them; choose another --out")


def plan_outputs(inputs: str | os.PathLike | Iterable[str | os.PathLike], out_dir: str | os.PathLike | None = None,
                 formats: Sequence[str] = ("json", "png", "mrk")) -> tuple[list[PlannedInput], list[str]]:
    """Each radiograph with its output name and the spacing its CSV row gives, and the problems.

    With ``out_dir``: the output folder is skipped when scanning input folders, names already taken in
    it by another radiograph's outputs are tagged, and a plan in which an output would replace an
    input is refused (ValueError) — see the module's rules.
    """
    if out_dir is not None:
        check_output_folder(inputs, out_dir)
    out = Path(out_dir) if out_dir is not None else None
    found, problems = _expand(inputs, exclude=out)
    names = []
    for path, root, _ in found:
        suffix = _image_suffix(path)
        rel = path.relative_to(root).as_posix() if root is not None else path.name
        names.append(rel[: len(rel) - len(suffix)] if suffix else rel)
    counts: dict[str, int] = {}
    for name in names:
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    sources = [source_of(path) for path, _, _ in found]
    planned = [PlannedInput(path, _stable_name(name, source, counts[name.lower()] > 1, out), spacing)
               for (path, _, spacing), name, source in zip(found, names, sources)]
    if out is not None:
        inputs_read = set(sources)
        for p in planned:
            for kind, target in outputs_of(out, p.name, formats).items():
                if source_of(target) in inputs_read:
                    raise ValueError(f"{p.path}: its {kind} output {target} would replace an input radiograph; "
                                     "choose another --out")
    return planned, problems

