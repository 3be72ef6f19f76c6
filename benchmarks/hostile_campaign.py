"""A campaign of hostile inputs and faults against the readers, `kneel predict`, the bundle's inference,
the Slicer module's logic and the label server's checks — beyond the cases of tests/test_hostile_inputs.py.

Each case builds its input in a temporary folder, runs the real component and judges the outcome:

* ``clean``: refused (or handled) with a one-line reason that names the file or option, no traceback,
  no hang (30 s per case), nothing already written lost;
* ``defect``: anything else — with what happened.

    python benchmarks/hostile_campaign.py [--out benchmarks/results/hostile_campaign]

Prints a table (area, case, outcome, what was said) and writes it as JSON and Markdown. A defect found
here becomes a test in tests/test_hostile_inputs.py when it is fixed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CASES: list[tuple[str, str, Callable[[Path], str]]] = []


class Defect(Exception):
    pass


def case(area: str, name: str):
    def register(fn: Callable[[Path], str]) -> Callable[[Path], str]:
        CASES.append((area, name, fn))
        return fn
    return register


def refused(call: Callable[[], object], path: Path | str, *words: str) -> str:
    """``call`` must raise a ValueError-like error, in one line, naming ``path`` and saying ``words``."""
    try:
        call()
    except (ValueError, OSError) as err:
        text = str(err)
        if "\n" in text.strip():
            raise Defect(f"a multi-line message: {text[:200]!r}") from None
        if str(path) not in text:
            raise Defect(f"the message does not name {path}: {text[:200]!r}") from None
        missing = [w for w in words if w.lower() not in text.lower()]
        if missing:
            raise Defect(f"the message does not say {missing}: {text[:200]!r}") from None
        return text
    raise Defect("accepted")


def small_dicom(path: Path, size=(240, 320), seed: int = 0, **kw) -> Path:
    from kneel_monai.io.dicom_writer import write_dicom

    rng = np.random.default_rng(seed)
    write_dicom(path, rng.integers(0, 4095, size, dtype=np.uint16), (0.4, 0.4), **kw)
    return path


def edit_dicom(path: Path, **tags) -> Path:
    import pydicom

    ds = pydicom.dcmread(path)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path)
    return path


def read(path: Path, spacing=None):
    from kneel_monai.io import read_radiograph

    return read_radiograph(path, spacing)


# ---- reading ---------------------------------------------------------------------------------------
@case("reading", "DICOM BitsAllocated 12")
def _(t):
    return refused(lambda: read(edit_dicom(small_dicom(t / "a.dcm"), BitsAllocated=12)), t / "a.dcm", "BitsAllocated")


@case("reading", "DICOM Rows 0")
def _(t):
    return refused(lambda: read(edit_dicom(small_dicom(t / "a.dcm"), Rows=0)), t / "a.dcm", "zero-size")


@case("reading", "DICOM PixelSpacing 0\\0, no other spacing")
def _(t):
    p = small_dicom(t / "a.dcm")
    import pydicom

    ds = pydicom.dcmread(p)
    for k in ("ImagerPixelSpacing", "PixelSpacing"):
        if k in ds:
            delattr(ds, k)
    ds.PixelSpacing = [0, 0]
    ds.save_as(p)
    return refused(lambda: read(p), p, "spacing")


@case("reading", "DICOM NumberOfFrames 2")
def _(t):
    return refused(lambda: read(edit_dicom(small_dicom(t / "a.dcm"), NumberOfFrames=2)), t / "a.dcm", "frame")


@case("reading", "DICOM SamplesPerPixel 3 / RGB")
def _(t):
    return refused(lambda: read(edit_dicom(small_dicom(t / "a.dcm"), SamplesPerPixel=3,
                                           PhotometricInterpretation="RGB")), t / "a.dcm", "grey")


@case("reading", "DICOM: 132-byte preamble only")
def _(t):
    p = t / "a.dcm"
    p.write_bytes(b"\0" * 128 + b"DICM")
    return refused(lambda: read(p), p)


@case("reading", "random bytes named .dcm")
def _(t):
    p = t / "a.dcm"
    p.write_bytes(np.random.default_rng(0).bytes(5000))
    return refused(lambda: read(p), p)


@case("reading", "random bytes named .png")
def _(t):
    p = t / "a.png"
    p.write_bytes(np.random.default_rng(1).bytes(5000))
    return refused(lambda: read(p, 0.2), p)


@case("reading", "DICOM with one extra pixel row of data")
def _(t):
    p = small_dicom(t / "a.dcm")
    import pydicom

    ds = pydicom.dcmread(p)
    ds.PixelData = ds.PixelData + b"\0" * (2 * ds.Columns)
    ds.save_as(p)
    return refused(lambda: read(p), p, "wrong header")


@case("reading", "DICOM spacing 1e-6 mm")
def _(t):
    p = small_dicom(t / "a.dcm")
    return refused(lambda: read(p, 1e-6), p, "outside")


@case("reading", "PNG 1 × 1 pixel")
def _(t):
    from PIL import Image

    p = t / "a.png"
    Image.new("L", (1, 1), 7).save(p)
    return refused(lambda: read(p, 0.2), p)


@case("reading", "PNG 2 × 50,000 (a 7.5 m strip)")
def _(t):
    from PIL import Image

    p = t / "a.png"
    Image.new("L", (2, 50000), 7).save(p)
    return refused(lambda: read(p, 0.15), p, "field")


@case("reading", "16-bit RGBA PNG with colour")
def _(t):
    from PIL import Image

    p = t / "a.png"
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (200, 300, 4), dtype=np.uint8), "RGBA").save(p)
    return refused(lambda: read(p, 0.2), p, "radiograph")


@case("reading", "multi-page TIFF")
def _(t):
    from PIL import Image

    p = t / "a.tif"
    frames = [Image.fromarray(np.full((100, 120), i * 40, np.uint8)) for i in range(3)]
    frames[0].save(p, save_all=True, append_images=frames[1:])
    try:
        image = read(p, 0.2)
    except ValueError as err:
        if str(p) not in str(err):
            raise Defect(str(err)) from None
        return str(err)
    return f"read its first page ({tuple(image.shape)}) — accepted as a single image"


@case("reading", "CMYK JPEG")
def _(t):
    from PIL import Image

    p = t / "a.jpg"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (100, 120, 4), dtype=np.uint8), "CMYK").save(p)
    return refused(lambda: read(p, 0.2), p)


@case("reading", "NIfTI 3-D volume")
def _(t):
    import nibabel as nib

    p = t / "a.nii"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 10), np.float32) + np.arange(10), np.eye(4)), p)
    return refused(lambda: read(p), p, "3-D")


@case("reading", "NRRD with NaN values")
def _(t):
    import SimpleITK as sitk

    p = t / "a.nrrd"
    arr = np.random.default_rng(4).random((80, 90)).astype(np.float32)
    arr[3, 3] = np.nan
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.2, 0.2))
    sitk.WriteImage(img, str(p))
    return refused(lambda: read(p), p, "NaN")


def metaimage(t: Path, data_file: str) -> Path:
    p = t / "a.mhd"
    p.write_text("ObjectType = Image\nNDims = 2\nDimSize = 64 64\nElementSpacing = 0.2 0.2\n"
                 f"ElementType = MET_UCHAR\nElementDataFile = {data_file}\n")
    return p


@case("reading", "MetaImage whose data file is missing")
def _(t):
    return refused(lambda: read(metaimage(t, "gone.raw")), t / "a.mhd", "does not exist")


@case("reading", "MetaImage whose data file is /dev/zero")
def _(t):
    return refused(lambda: read(metaimage(t, "/dev/zero")), t / "a.mhd", "not a regular file")


@case("reading", "symbolic link loop")
def _(t):
    (t / "a.dcm").symlink_to(t / "b.dcm")
    (t / "b.dcm").symlink_to(t / "a.dcm")
    return refused(lambda: read(t / "a.dcm"), t / "a.dcm", "link")


@case("reading", "a folder named x.dcm")
def _(t):
    (t / "x.dcm").mkdir()
    return refused(lambda: read(t / "x.dcm"), t / "x.dcm", "directory")


@case("reading", "float TIFF with infinities")
def _(t):
    import SimpleITK as sitk

    p = t / "a.tif"
    arr = np.ones((60, 70), np.float32)
    arr[0, 0] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(p))
    return refused(lambda: read(p, 0.2), p, "infinite")


@case("reading", "gzip-bombed NIfTI declaring 20,000²")
def _(t):
    import gzip

    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((20000, 20000))
    header.set_data_dtype(np.uint8)
    header.set_zooms((0.15, 0.15))
    p = t / "bomb.nii.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(header.binaryblock + b"\0" * 4)
        chunk = b"\0" * 1_000_000
        for _ in range(4):  # only 4 MB of the 400 MB: the header alone must refuse it
            fh.write(chunk)
    return refused(lambda: read(p), p, "megapixels")


# ---- kneel predict (whole process, as a user runs it) --------------------------------------------------------
def kneel(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kneel_monai.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def one_line_error(proc: subprocess.CompletedProcess, *words: str, rc: int = 2) -> str:
    err = (proc.stderr + proc.stdout).strip()  # failed files are listed on stdout, usage errors on stderr
    if proc.returncode != rc:
        raise Defect(f"exit code {proc.returncode}: {err[-300:]!r}")
    if "Traceback" in err:
        raise Defect(f"a traceback: {err[-300:]!r}")
    last = err.splitlines()[-1] if err else ""
    missing = [w for w in words if w.lower() not in err.lower()]
    if missing:
        raise Defect(f"does not say {missing}: {err[-300:]!r}")
    return last


@case("predict", "input is /dev/null")
def _(t):
    proc = kneel("predict", "/dev/null", "--out", str(t / "o"), "--no-progress")
    return one_line_error(proc, "/dev/null", "not a regular file", rc=1).strip()


@case("predict", "--out is an existing file")
def _(t):
    (t / "f").write_text("x")
    return one_line_error(kneel("predict", str(small_dicom(t / "a.dcm")), "--out", str(t / "f")), str(t / "f"),
                          "not a folder")


@case("predict", "--spacing -1")
def _(t):
    return one_line_error(kneel("predict", str(small_dicom(t / "a.dcm")), "--out", str(t / "o"), "--spacing", "-1"),
                          "--spacing")


@case("predict", "--mc-dropout 1")
def _(t):
    return one_line_error(kneel("predict", str(small_dicom(t / "a.dcm")), "--out", str(t / "o"), "--mc-dropout", "1"),
                          "--mc-dropout")


@case("predict", "a CSV list that lists itself and a folder")
def _(t):
    small_dicom(t / "d" / "a.dcm")
    lst = t / "l.csv"
    lst.write_text(f"path\n{lst.name}\nd\n")
    proc = kneel("predict", str(lst), "--out", str(t / "o"), "--format", "json", "--no-progress")
    if "Traceback" in proc.stderr or proc.returncode not in (0, 1):
        raise Defect(proc.stderr[-300:])
    summary = json.loads((t / "o" / "summary.json").read_text())
    return f"rc {proc.returncode}; {summary['n_ok']} predicted, failed: " + "; ".join(
        f["error"] for f in summary["failed"])[:200]


@case("predict", "one file given three ways (relative, absolute, through ..)")
def _(t):
    a = small_dicom(t / "d" / "a.dcm")
    kneel("predict", str(a), str(t / "d" / ".." / "d" / "a.dcm"), os.path.relpath(a, REPO), "--out",
          str(t / "o"), "--format", "json", "--no-progress")
    summary = json.loads((t / "o" / "summary.json").read_text())
    if summary["n_ok"] != 1:
        raise Defect(f"predicted {summary['n_ok']} times")
    return "predicted once"


@case("predict", "file names with a newline and non-ASCII characters")
def _(t):
    a = small_dicom(t / "knee\nzweite Zeile – é.dcm")
    proc = kneel("predict", str(a), "--out", str(t / "o"), "--no-progress")
    if proc.returncode != 0 or not list((t / "o").glob("*.mrk.json")):
        raise Defect(proc.stderr[-300:])
    return "predicted; outputs " + ", ".join(sorted(p.name for p in (t / "o").iterdir()))[:150]


@case("predict", "a 64 × 64 image")
def _(t):
    proc = kneel("predict", str(small_dicom(t / "a.dcm", size=(64, 64))), "--out", str(t / "o"), "--no-progress")
    if proc.returncode not in (0, 1) or "Traceback" in proc.stderr:
        raise Defect(proc.stderr[-300:])
    data = json.loads((t / "o" / "a.json").read_text())
    if any(k["present"] for k in data["knees"].values()):
        raise Defect("a knee reported on a 64 × 64 noise image")
    return data["knees"]["R"]["reason"][:120]


@case("predict", "float image with values near 1e30")
def _(t):
    import SimpleITK as sitk

    p = t / "a.nrrd"
    img = sitk.GetImageFromArray((np.random.default_rng(5).random((500, 600)) * 1e30).astype(np.float32))
    img.SetSpacing((0.4, 0.4))
    sitk.WriteImage(img, str(p))
    proc = kneel("predict", str(p), "--out", str(t / "o"), "--format", "json", "--no-progress")
    if proc.returncode not in (0, 1) or "Traceback" in proc.stderr:
        raise Defect(proc.stderr[-300:])
    data = json.loads((t / "o" / "a.json").read_text())
    return f"knees present: {[s for s, k in data['knees'].items() if k['present']]}"


@case("predict", "the output folder is a dangling link")
def _(t):
    (t / "o").symlink_to(t / "nowhere" / "deeper")
    return one_line_error(kneel("predict", str(small_dicom(t / "a.dcm")), "--out", str(t / "o")), "link to nothing")


@case("predict", "weights file cut short")
def _(t):
    import shutil

    from kneel_monai.inference import default_model_dirs

    roi, lm = default_model_dirs()
    model = t / "m"
    shutil.copytree(roi, model / "roi")
    shutil.copytree(lm, model / "landmarks")
    w = model / "landmarks" / "fold_0.safetensors"
    w.write_bytes(w.read_bytes()[:5000])
    return one_line_error(kneel("predict", str(small_dicom(t / "a.dcm")), "--out", str(t / "o"), "--model", str(model)),
                          "safetensors")


# ---- bundle inference ----------------------------------------------------------------------------------------
def bundle_infer(t: Path, *overrides: str) -> subprocess.CompletedProcess:
    bundle = REPO / "bundles" / "kneel_landmarks"
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", "inference", "--bundle_root", str(bundle),
                           "--config_file", str(bundle / "configs" / "inference.json"), *overrides],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


@case("bundle", "inference over a folder with a truncated DICOM beside a good one")
def _(t):
    good = small_dicom(t / "in" / "good.dcm", size=(900, 1100))
    (t / "in" / "cut.dcm").write_bytes(good.read_bytes()[:4000])
    proc = bundle_infer(t, "--input_dir", str(t / "in"), "--output_dir", str(t / "o"))
    if not (t / "o" / "good.json").is_file():
        raise Defect(f"rc {proc.returncode}; good.json not written: {proc.stderr[-300:]!r}")
    summary = t / "o" / "summary.json"
    said = json.loads(summary.read_text())["failed"] if summary.is_file() else proc.stderr[-200:]
    return f"rc {proc.returncode}; good.json written; failed: {str(said)[:200]}"


@case("bundle", "inference with min_confidence NaN")
def _(t):
    small_dicom(t / "in" / "a.dcm")
    proc = bundle_infer(t, "--input_dir", str(t / "in"), "--output_dir", str(t / "o"), "--min_confidence", "nan")
    if proc.returncode == 0:
        raise Defect("accepted min_confidence NaN")
    if "min_confidence" not in proc.stderr:
        raise Defect(proc.stderr[-300:])
    return "refused: min_confidence"


# ---- Slicer module logic (headless MRML) -------------------------------------------------------------------
def slicer_lib():
    module = REPO / "KneelSlicerExtension" / "KneelLandmarks"
    if str(module) not in sys.path:
        sys.path.insert(0, str(module))
    import KneelLandmarksLib

    return KneelLandmarksLib


@case("slicer", "prediction JSON with 15 landmarks for a knee")
def _(t):
    slicer_lib()  # the module folder on sys.path
    from KneelLandmarksLib import results
    from slicer import vtkMRMLScalarVolumeNode, vtkMRMLScene

    scene = vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode") if hasattr(scene, "AddNewNodeByClass") else \
        scene.AddNode(vtkMRMLScalarVolumeNode())
    knee = {"present": True, "landmarks_px": [[1.0, 2.0]] * 15, "confidence": [0.5] * 15, "quality": "ok"}
    try:
        results.create_knee_node(scene, "R", knee, np.eye(4), volume)
    except ValueError as err:
        return str(err)
    raise Defect("a 15-point knee was turned into a markups node")


# ---- label checks ----------------------------------------------------------------------------------------------
def label(markups: list, **kneel) -> str:
    return json.dumps({"@schema": "https://x/markups-v1.0.3-schema.json#", "markups": markups,
                       **({"kneel": kneel} if kneel else {})})


def points(n: int = 16, status: str = "defined") -> list:
    return [{"label": str(i), "position": [10.0 + i, 20.0, 0.0], "positionStatus": status} for i in range(n)]


def label_refused(text: str, status: int, *words: str) -> str:
    from kneel_monai.label import LabelError, parse_label

    try:
        parse_label(text)
    except LabelError as err:
        if err.status != status:
            raise Defect(f"status {err.status}, expected {status}: {err}") from None
        missing = [w for w in words if w.lower() not in str(err).lower()]
        if missing:
            raise Defect(f"does not say {missing}: {err}") from None
        return f"{err.status} {err}"
    raise Defect("accepted")


@case("label", "17 control points")
def _(t):
    return label_refused(label([{"type": "Fiducial", "name": "Right knee", "controlPoints": points(17)}],
                               absent_knees={"L": "x"}), 422, "17")


@case("label", "a point not placed (positionStatus undefined)")
def _(t):
    return label_refused(label([{"type": "Fiducial", "name": "Right knee", "controlPoints": points(16, "undefined")}],
                               absent_knees={"L": "x"}), 422, "not placed")


@case("label", "coordinateSystem XYZ")
def _(t):
    return label_refused(label([{"type": "Fiducial", "name": "Right knee", "controlPoints": points(),
                                 "coordinateSystem": "XYZ"}], absent_knees={"L": "x"}), 422, "XYZ")


@case("label", "absent_knees is a list")
def _(t):
    return label_refused(label([{"type": "Fiducial", "name": "Right knee", "controlPoints": points()}],
                               absent_knees=["L"]), 422, "absent_knees")


@case("label", "a label of 5 MB of whitespace")
def _(t):
    return label_refused(" " * 5_000_000, 400, "not JSON")


@case("label", "position with a string")
def _(t):
    bad = points()
    bad[3]["position"] = ["1", 2, 3]
    return label_refused(label([{"type": "Fiducial", "name": "Right knee", "controlPoints": bad}],
                               absent_knees={"L": "x"}), 422, "3 numbers")


@case("label", "image id with unicode and spaces")
def _(t):
    from kneel_monai.label import LabelError, check_id

    try:
        check_id("knee ünicode")
    except LabelError as err:
        if err.status != 400:
            raise Defect(str(err)) from None
        return str(err)
    raise Defect("accepted")


@case("label", "a zero-byte image upload")
def _(t):
    import pytest  # noqa: F401 — fastapi's HTTPException is what the server answers with
    from fastapi import HTTPException

    from kneel_monai.label.datastore import KneelDatastore

    (t / "studies").mkdir()
    store = KneelDatastore(str(t / "studies"), auto_reload=False)
    upload = t / "tmp123.dcm"
    upload.write_bytes(b"")
    try:
        store.add_image("new", str(upload), {})
    except HTTPException as err:
        if err.status_code != 400 or "tmp123" in str(err.detail):
            raise Defect(f"{err.status_code} {err.detail}") from None
        return f"{err.status_code} {err.detail}"
    raise Defect("accepted")


def run_case(fn: Callable[[Path], str], seconds: int = 120) -> tuple[str, str]:
    def alarm(*_):
        raise TimeoutError(f"no answer within {seconds} s (hangs)")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return "clean", fn(Path(tmp))
    except Defect as err:
        return "defect", str(err)
    except Exception as err:  # noqa: BLE001 — anything unexpected is a defect to report
        return "defect", f"{type(err).__name__}: {err} — " + traceback.format_exc(limit=2).splitlines()[-1]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "hostile_campaign")
    parser.add_argument("--only", help="run only the cases whose area or name contains this")
    ns = parser.parse_args()
    os.environ.setdefault("MONAI_LABEL_TRACKING_ENABLED", "false")
    rows = []
    from tqdm.auto import tqdm

    chosen = [c for c in CASES if not ns.only or ns.only in c[0] or ns.only in c[1]]
    for area, name, fn in tqdm(chosen, desc="hostile cases", unit="case"):
        outcome, said = run_case(fn)
        rows.append({"area": area, "case": name, "outcome": outcome, "said": " ".join(said.split())[:240]})
    counts = {"tried": len(rows), "clean": sum(r["outcome"] == "clean" for r in rows),
              "defect": sum(r["outcome"] == "defect" for r in rows)}
    lines = ["| area | case | outcome | what was said |", "|---|---|---|---|"]
    lines += [f"| {r['area']} | {r['case']} | {r['outcome']} | {r['said'].replace('|', '/')} |" for r in rows]
    lines.append(f"\n{counts['tried']} tried, {counts['clean']} clean, {counts['defect']} defects")
    print("\n".join(lines))
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "hostile_campaign.json").write_text(json.dumps({"counts": counts, "rows": rows}, indent=1) + "\n")
    (ns.out / "hostile_campaign.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
