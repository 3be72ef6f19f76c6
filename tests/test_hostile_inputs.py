"""Hostile input and faults (issue 15): every case is built here, small, and must end in a one-line
reason naming the file, the run going on, and nothing lost or half-written.

Grows with every case found: reading (limits, truncation, pipes), run planning (outputs never replace
inputs, stable names), the cohort run (a dead reading process, unwritable run files), usage errors,
model files and the label server's checks.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import psutil
import pytest
from label_server import require_monailabel
from PIL import Image

from kneel_monai.atomic import TEMP_PREFIX, atomic_write_text
from kneel_monai.cli import main
from kneel_monai.cohort import OutputsNotWritten, ReadAhead, _RadiographReader, predict_paths
from kneel_monai.inference import KneelPredictor, default_model_dirs
from kneel_monai.io import read_radiograph
from kneel_monai.io.dicom_writer import write_dicom
from kneel_monai.io.reading import RadiographReadError, ReadLimits
from kneel_monai.model_io import ModelFormatError, load_model
from kneel_monai.run_plan import plan_outputs, source_of

TORCH_THREADS = 2  # see conftest.torch_threads
SPACING = (0.4, 0.4)


def grey_png(path: Path, h: int = 300, w: int = 240, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16)).save(path)
    return path


def small_dicom(path: Path, seed: int = 0, size=(240, 320)) -> Path:
    rng = np.random.default_rng(seed)
    write_dicom(path, rng.integers(0, 4095, size, dtype=np.uint16), SPACING)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def predictor():
    return KneelPredictor(*default_model_dirs(), device="cpu")


# ---- outputs never replace inputs ---------------------------------------------------------------------------
def test_the_input_folder_as_output_folder_is_refused_and_nothing_changes(tmp_path, capsys):
    inputs = tmp_path / "p"
    for i in range(2):
        grey_png(inputs / f"knee_{i}.png", seed=i)
    (inputs / "knee_0.json").write_text('{"truth": 1}')
    before = snapshot(inputs)
    assert main(["predict", str(inputs), "--out", str(inputs), "--spacing", "0.4", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is an input folder" in err and len(err.strip().splitlines()) == 1
    # a single input whose overlay would land on itself
    assert main(["predict", str(inputs / "knee_1.png"), "--out", str(inputs), "--spacing", "0.4"]) == 2
    assert "would replace an input" in capsys.readouterr().err
    assert snapshot(inputs) == before


def test_an_output_folder_inside_the_input_tree_is_never_read_back(tmp_path, predictor):
    root = tmp_path / "study"
    small_dicom(root / "a.dcm", 1)
    grey_png(root / "sub" / "b.png")
    out = root / "predictions"
    first = predict_paths(predictor, root, out, formats=("json", "png"), spacing_mm=0.4, progress=False)
    assert first["n_ok"] == 2 and first["n_failed"] == 0
    again = predict_paths(predictor, root, out, formats=("json", "png"), spacing_mm=0.4, progress=False)
    assert again["n_inputs"] == 2 and again["n_skipped"] == 2 and again["n_failed"] == 0  # overlays not inputs


# ---- stable names -------------------------------------------------------------------------------------------
def test_names_are_stable_per_input_and_never_collide(tmp_path, monkeypatch):
    a, b = small_dicom(tmp_path / "a" / "knee.dcm", 1), small_dicom(tmp_path / "b" / "knee.dcm", 2)
    summary_like = small_dicom(tmp_path / "c" / "summary.dcm", 3)
    out = tmp_path / "out"
    together, _ = plan_outputs([a, b, summary_like], out)
    names = {p.path: p.name for p in together}
    assert len(set(names.values())) == 3 and names[a] != "knee" and names[b] != "knee"
    assert names[summary_like] not in ("summary", "cohort")
    # the same names in the other order, and however the path is spelled
    monkeypatch.chdir(tmp_path)
    reordered, _ = plan_outputs([Path("b/knee.dcm"), Path("a") / ".." / "a" / "knee.dcm", summary_like], out)
    assert {source_of(p.path): p.name for p in reordered} == {source_of(k): v for k, v in names.items()}
    # a's outputs exist as "knee"; b run alone later must not take that name
    out.mkdir()
    atomic_write_text(out / "knee.json", json.dumps({"format": "kneel-monai/prediction", "image": "a/knee.dcm",
                                                      "source": source_of(a)}))
    alone, _ = plan_outputs([b], out)
    assert alone[0].name != "knee"
    assert plan_outputs([a], out)[0][0].name == "knee"  # a keeps the name its outputs have


def test_a_folder_spelled_two_ways_is_skipped_the_second_time(tmp_path, predictor, monkeypatch):
    small_dicom(tmp_path / "kill" / "x.dcm", 4)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert predict_paths(predictor, "kill", out, formats=("json",), progress=False)["n_ok"] == 1
    again = predict_paths(predictor, str(tmp_path / "kill"), out, formats=("json",), progress=False)
    assert again["n_skipped"] == 1 and again["n_ok"] == 0


# ---- memory bombs and impossible geometry ---------------------------------------------------------------------
def png_bomb(path: Path, side: int) -> Path:
    """A valid 8-bit grey PNG of side² zero pixels, written without ever holding them (a few hundred KB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_memory_bombs_are_refused_from_the_header(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png", 20_000)
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(RadiographReadError, match="400 megapixels.*not decoded") as err:
        read_radiograph(bomb, 0.15)
    assert err.value.path == str(bomb)
    # a DICOM whose header declares 20,000² pixels (its data is not even there): refused before decoding
    big = small_dicom(tmp_path / "big.dcm")
    import pydicom

    ds = pydicom.dcmread(big)
    ds.Rows = ds.Columns = 20_000
    ds.save_as(big)
    with pytest.raises(RadiographReadError, match="megapixels"):
        read_radiograph(big)
    # the limit is the caller's to raise
    with pytest.raises(RadiographReadError, match="limit 1;"):
        read_radiograph(png_bomb(tmp_path / "small.png", 1100), 0.15, ReadLimits(max_pixels=1_000_000))


@pytest.mark.parametrize("spacing, problem", [(100.0, "outside"), (1000.0, "outside"), (4.0, "field of")])
def test_spacings_no_radiograph_has_are_refused_before_resampling(tmp_path, spacing, problem):
    path = grey_png(tmp_path / "x.png", 900, 700)
    with pytest.raises(RadiographReadError, match=problem):
        read_radiograph(path, spacing)


def test_synth_refuses_sizes_no_radiograph_has(tmp_path, capsys):
    assert main(["synth", "--n", "1", "--size", "100000", "100000", str(tmp_path / "s")]) == 2
    assert "size must be" in capsys.readouterr().err and not (tmp_path / "s").exists()


# ---- truncated and corrupt files, pipes ------------------------------------------------------------------------
def test_truncated_and_mis_sized_files_fail_with_the_reason(tmp_path):
    rng = np.random.default_rng(1)
    jpeg = tmp_path / "full.jpg"
    Image.fromarray(rng.integers(0, 255, (400, 300), dtype=np.uint8)).save(jpeg, quality=90)
    read_radiograph(jpeg, 0.2)  # whole: fine
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    with pytest.raises(RadiographReadError, match="truncated JPEG"):
        read_radiograph(cut, 0.2)
    png = grey_png(tmp_path / "g.png")
    (tmp_path / "cut.png").write_bytes(png.read_bytes()[:-40])
    with pytest.raises(RadiographReadError, match="truncated PNG"):
        read_radiograph(tmp_path / "cut.png", 0.2)
    # a DICOM whose Rows is half what its pixel data holds
    import pydicom

    half = small_dicom(tmp_path / "half.dcm")
    ds = pydicom.dcmread(half)
    ds.Rows = ds.Rows // 2
    ds.save_as(half)
    with pytest.raises(RadiographReadError, match="wrong header"):
        read_radiograph(half)


def test_a_metaimage_whose_data_file_is_a_pipe_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "data.raw")
    header = tmp_path / "x.mhd"
    header.write_text("ObjectType = Image\nNDims = 2\nDimSize = 64 64\nElementSpacing = 0.2 0.2\n"
                      "ElementType = MET_UCHAR\nElementDataFile = data.raw\n")
    t0 = time.perf_counter()
    with pytest.raises(RadiographReadError, match="not a regular file"):
        read_radiograph(header)
    assert time.perf_counter() - t0 < 10


def test_non_knee_images_report_no_knee(tmp_path, predictor):
    rng = np.random.default_rng(5)
    near_black = small_dicom(tmp_path / "dark.dcm", size=(700, 900))
    write_dicom(near_black, rng.integers(0, 6, (700, 900), dtype=np.uint16), SPACING)
    text = Image.new("L", (900, 700), 230)
    from PIL import ImageDraw

    draw = ImageDraw.Draw(text)
    for y in range(20, 680, 24):
        draw.text((20, y), "The knee joint is a hinge joint " * 3, fill=20)
    text.save(tmp_path / "text.png")
    for path, spacing in ((near_black, None), (tmp_path / "text.png", 0.4)):
        result = predictor.predict_file(path, spacing)
        assert not any(k.present for k in result.knees.values()), path
        assert result.view["verdict"] == "no_ap_knee" and all(k.reason for k in result.knees.values())


# ---- the cohort run survives faults ----------------------------------------------------------------------------
def test_a_killed_reading_process_fails_at_most_its_file_and_reading_goes_on(tmp_path):
    files = [small_dicom(tmp_path / f"r{i}.dcm", i) for i in range(6)]
    reads = ReadAhead(_RadiographReader(files, None), workers=1)
    items = iter(reads)
    got = [next(items)]
    for child in psutil.Process().children(recursive=True):  # kill -9 the reading process
        os.kill(child.pid, signal.SIGKILL)
    got += list(items)
    assert reads.restarts >= 1
    assert sorted(i["index"] for i in got) == list(range(6))  # nothing lost, nothing twice
    # a file that was merely in flight is read again and comes through
    assert all("image" in i for i in got)


def test_run_files_that_cannot_be_written_are_said_and_outputs_kept(tmp_path, predictor):
    small_dicom(tmp_path / "in" / "a.dcm", 7)
    out = tmp_path / "out"
    (out / "summary.json").mkdir(parents=True)  # cannot be replaced by a file: like a full or locked disk
    with pytest.raises(OutputsNotWritten) as err:
        predict_paths(predictor, tmp_path / "in", out, formats=("json", "csv"), progress=False)
    assert "summary.json" in str(err.value) and err.value.summary["n_ok"] == 1
    assert (out / "a.json").is_file() and (out / "cohort.csv").is_file()
    assert not list(out.glob(f"{TEMP_PREFIX}*"))
    # an output folder that cannot be created is refused before any model loads or file is read
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["predict", str(tmp_path / "in"), "--out", str(blocker / "sub"), "--model", str(tmp_path)]) == 2


def test_csv_lists_in_latin1_or_binary_do_not_stop_the_run(tmp_path, predictor):
    image = small_dicom(tmp_path / "genou_é.dcm", 8)
    latin = tmp_path / "list.csv"
    latin.write_bytes(f"path\n{image.name}\n".encode("latin-1"))
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"path\n\x00\x01\x02\xff\n")
    other = small_dicom(tmp_path / "other.dcm", 9)
    summary = predict_paths(predictor, [latin, binary, other], tmp_path / "out", formats=("json",), progress=False)
    assert summary["n_ok"] == 2
    assert [f["input"] for f in summary["failed"]] == [str(binary)] and "NUL" in summary["failed"][0]["error"]


def test_stale_temporaries_are_removed_and_long_names_fit(tmp_path, predictor):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f"{TEMP_PREFIX}abc.tmp"
    stale.write_text("")
    os.utime(stale, (time.time() - 3600,) * 2)
    fresh = out / f"{TEMP_PREFIX}def.tmp"  # a writer may still be running
    fresh.write_text("")
    long_name = small_dicom(tmp_path / ("k" * 236 + ".dcm"), 10)
    summary = predict_paths(predictor, long_name, out, formats=("json", "png", "mrk"), progress=False)
    assert summary["n_ok"] == 1 and (out / ("k" * 236 + ".mrk.json")).is_file()
    assert not stale.exists() and fresh.exists()


def test_dangling_links_are_named_not_skipped_silently(tmp_path, predictor):
    small_dicom(tmp_path / "in" / "a.dcm", 11)
    (tmp_path / "in" / "gone.dcm").symlink_to(tmp_path / "nowhere.dcm")
    summary = predict_paths(predictor, tmp_path / "in", tmp_path / "out", formats=("json",), progress=False)
    assert summary["n_ok"] == 1 and "dangling" in summary["failed"][0]["error"]


# ---- usage and model files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args, said", [
    (["--spacing", "0"], "--spacing"), (["--spacing", "nan"], "--spacing"), (["--spacing", "inf"], "--spacing"),
    (["--spacing", "0.1", "0.1", "0.1"], "--spacing"), (["--format", ","], "no format"),
    (["--workers", "-1"], "--workers"), (["--min-confidence", "nan"], "--min-confidence"),
    (["--max-megapixels", "0"], "--max-megapixels"),
])
def test_usage_errors_are_caught_before_the_models_load(tmp_path, capsys, args, said):
    image = small_dicom(tmp_path / "a.dcm")
    # a model folder that does not exist: a usage error must be said first, as one line
    assert main(["predict", str(image), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "none"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and len(err.splitlines()) == 1 and "model folder" not in err
    assert main(["predict", str(image), "--out", ""]) == 2
    assert "--out is empty" in capsys.readouterr().err


@pytest.mark.parametrize("change, said", [
    (lambda c: c.update(network="x"), "'network' must be an object"),
    (lambda c: c.update(format_version="2"), "whole number"),
    (lambda c: c.update(weights="fold_0.safetensors"), "list of file names"),
])
def test_broken_model_files_say_what_is_wrong(tmp_path, change, said):
    src = default_model_dirs()[1]
    model = tmp_path / "m"
    model.mkdir()
    config = json.loads((src / "model.json").read_text())
    change(config)
    (model / "model.json").write_text(json.dumps(config))
    (model / "fold_0.safetensors").write_bytes((src / "fold_0.safetensors").read_bytes())
    with pytest.raises(ModelFormatError, match=said):
        load_model(model)


def test_a_cut_short_model_file_is_not_reported_missing(tmp_path, capsys):
    src = default_model_dirs()[1]
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.json").write_text((src / "model.json").read_text()[:100])
    assert main(["predict", str(small_dicom(tmp_path / "a.dcm")), "--out", str(tmp_path / "o"), "--model",
                 str(model)]) == 2
    err = capsys.readouterr().err
    assert "cannot read it as JSON" in err and "no model.json" not in err


# ---- the label server's checks (its request handlers call these; 4xx, never 500) ---------------------------
def test_label_checks_answer_4xx_for_hostile_labels(tmp_path):
    require_monailabel()
    from kneel_monai.label import LabelError, parse_label
    from kneel_monai.label.datastore import KneelDatastore

    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(LabelError) as err:
        parse_label(deep)
    assert err.value.status == 400
    point = {"label": "0", "position": [10 ** 400, 0, 0], "positionStatus": "defined"}
    huge = {"@schema": "https://x/markups-v1.0.3-schema.json#", "markups": [
        {"type": "Fiducial", "name": "Right knee", "controlPoints": [point] * 16}],
        "kneel": {"absent_knees": {"L": "not there"}}}
    with pytest.raises(LabelError) as err:
        parse_label(json.dumps(huge))
    assert err.value.status == 422 and "out of range" in str(err.value)
    # a label for a stored image that is itself truncated: the image is named, 409
    studies = tmp_path / "studies"
    good = small_dicom(studies / "ok.dcm")
    (studies / "cut.dcm").write_bytes(good.read_bytes()[:3000] + b"\0" * 10)
    store = KneelDatastore(str(studies), auto_reload=False)
    label = tmp_path / "l.mrk.json"
    fine = [{"label": str(i), "position": [10.0 + i, 20.0, 0.0], "positionStatus": "defined"} for i in range(16)]
    label.write_text(json.dumps(dict(huge, markups=[dict(huge["markups"][0], controlPoints=fine)])))
    assert store.validate_label("ok", str(label))["knees"] == ["R"]  # the same label on a readable image
    assert "cut" in store._datastore.objects
    with pytest.raises(LabelError) as err:
        store.validate_label("cut", str(label))
    assert err.value.status == 409 and "'cut' cannot be read" in str(err.value)
    with pytest.raises(LabelError, match="invalid label tag"):
        from kneel_monai.label import check_id

        check_id("../x", "label tag")


def test_links_to_nothing_and_missing_data_files_say_so(tmp_path, capsys):
    (tmp_path / "a.dcm").symlink_to(tmp_path / "b.dcm")
    (tmp_path / "b.dcm").symlink_to(tmp_path / "a.dcm")  # a loop
    with pytest.raises(RadiographReadError, match="symbolic link to nothing"):
        read_radiograph(tmp_path / "a.dcm")
    header = tmp_path / "x.mhd"
    header.write_text("ObjectType = Image\nNDims = 2\nDimSize = 8 8\nElementSpacing = 0.2 0.2\n"
                      "ElementType = MET_UCHAR\nElementDataFile = gone.raw\n")
    with pytest.raises(RadiographReadError, match="gone.raw does not exist"):
        read_radiograph(header)
    image = small_dicom(tmp_path / "k.dcm")
    (tmp_path / "f").write_text("x")
    (tmp_path / "o").symlink_to(tmp_path / "nowhere" / "deeper")
    for out, said in ((tmp_path / "f", "is a file, not a folder"), (tmp_path / "o", "symbolic link to nothing")):
        assert main(["predict", str(image), "--out", str(out)]) == 2
        assert said in capsys.readouterr().err


def test_a_deflated_dicom_is_measured_before_pydicom_inflates_it(tmp_path):
    import pydicom

    plain = small_dicom(tmp_path / "plain.dcm", size=(2000, 2000))
    ds = pydicom.dcmread(plain)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    deflated = tmp_path / "deflated.dcm"
    ds.save_as(deflated, write_like_original=False)
    assert np.array_equal(read_radiograph(deflated).numpy(), read_radiograph(plain).numpy())  # within the limits
    with pytest.raises(RadiographReadError, match="inflates to more than 3 MB"):
        read_radiograph(deflated, limits=ReadLimits(max_pixels=1_000_000))


def test_a_real_chest_radiograph_and_a_ct_slice_report_no_knee(predictor):
    import pydicom
    from test_reading import pydicom_data_file

    for path, spacing in ((pydicom_data_file("RG3_UNCR.dcm"), 0.14),  # a CR without spacing tags
                          (Path(pydicom.data.get_testdata_file("CT_small.dcm")), 0.5)):
        result = predictor.predict_file(path, spacing)
        assert result.view["verdict"] == "no_ap_knee", path
        assert not any(k.present for k in result.knees.values()) and all("no knee" in k.reason
                                                                        for k in result.knees.values())


def test_a_csv_with_a_filepath_column_and_a_nifti_with_negative_spacing(tmp_path, predictor):
    image = small_dicom(tmp_path / "a.dcm", 12)
    listed = tmp_path / "list.csv"
    listed.write_text("subject,filepath\n1,a.dcm\n")
    summary = predict_paths(predictor, listed, tmp_path / "out", formats=("json",), progress=False)
    assert summary["n_ok"] == 1 and summary["n_failed"] == 0  # the header is not taken for a path
    assert json.loads((tmp_path / "out" / "a.json").read_text())["source"] == source_of(image)
    import nibabel as nib

    img = nib.Nifti1Image(np.random.default_rng(0).random((40, 50, 1)).astype(np.float32), np.eye(4))
    img.header["pixdim"][1:3] = [-0.2, -0.2]
    nib.save(img, tmp_path / "neg.nii")
    with pytest.raises(RadiographReadError, match="is not positive"):
        read_radiograph(tmp_path / "neg.nii")


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    import subprocess
    import sys

    image = small_dicom(tmp_path / "a.dcm")
    # Ctrl-C as at a terminal: a shell starts background jobs with SIGINT ignored, and a CI runner may too
    proc = subprocess.Popen([sys.executable, "-m", "kneel_monai.cli", "predict", str(image), "--out",
                             str(tmp_path / "o")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(1.5)  # importing torch and loading the models takes longer than this
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    # 130 from main(); or killed by SIGINT (the shell's $? is 130 too): CPython re-raises SIGINT at exit when the
    # interrupt passed through an exec'd code string inside an import (e.g. torch's), even though main() caught it.
    assert proc.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("kneel predict: interrupted")
