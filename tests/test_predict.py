"""`kneel predict` on a cohort: shipped models, synthetic radiographs with known ground truth, bad input.

The folder mixes good radiographs (DICOM, a single-knee one, one in a sub-folder) with a truncated
DICOM, a JPEG photo (RGB), an RGB PNG, a grey PNG without spacing and a zero-byte file.
"""

import csv
import json
import shutil

import jsonschema
import numpy as np
import pytest
import torch
from PIL import Image

from kneel_monai.cli import main
from kneel_monai.cohort import COHORT_COLUMNS, predict_paths
from kneel_monai.inference import KneelPredictor, default_model_dirs, resolve_model_dirs
from kneel_monai.measurements import MEASUREMENTS, knee_measurements
from kneel_monai.metrics import landmark_errors_mm
from kneel_monai.synthetic.generate import generate_radiograph, write_radiograph

#: (stem, seed, knees, sub-folder)
GOOD = [("bilateral_a", 8_100_001, ("R", "L"), ""), ("bilateral_b", 8_100_002, ("R", "L"), "site2"),
        ("right_only", 8_100_003, ("R",), "")]
BAD = {"truncated.dcm": "truncated", "cat.jpg": "RGB", "screenshot.png": "RGB", "no_spacing.png": "spacing",
       "empty.dcm": "empty"}


TORCH_THREADS = 2  # see conftest.torch_threads


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A folder of good and bad inputs, and the ground truth of the good ones."""
    root = tmp_path_factory.mktemp("cohort")
    truth = {}
    for stem, seed, knees, sub in GOOD:
        sample = generate_radiograph(seed, knees=knees, spacing_mm=0.2, size=(1600, 1900))
        image_path, _ = write_radiograph(sample, root / sub, stem)
        (root / sub / f"{stem}.json").rename(root / sub / f"{stem}.truth")  # keep ground truth out of the scan
        truth[str(image_path)] = sample
    good = root / "bilateral_a.dcm"
    (root / "truncated.dcm").write_bytes(good.read_bytes()[: 20_000])
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(root / "cat.jpg", quality=90)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(root / "screenshot.png")
    Image.fromarray(rng.integers(0, 65535, (400, 300), dtype=np.uint16)).save(root / "no_spacing.png")
    (root / "empty.dcm").write_bytes(b"")
    return root, truth


@pytest.fixture(scope="module")
def first_run(cohort, tmp_path_factory):
    root, _ = cohort
    out = tmp_path_factory.mktemp("predictions")
    code = main(["predict", str(root), "--out", str(out), "--device", "cpu", "--workers", "1", "--no-progress"])
    return out, code


def read_cohort_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def test_every_good_file_gets_its_outputs_every_bad_one_a_reason(cohort, first_run):
    root, truth = cohort
    out, code = first_run
    assert code == 1  # some inputs failed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_ok"] == len(GOOD) and summary["n_failed"] == len(BAD)
    for stem, _, _, sub in GOOD:
        for suffix in (".json", ".png", ".mrk.json"):
            assert (out / sub / f"{stem}{suffix}").is_file(), (sub, stem, suffix)
    reasons = {item["input"].split("/")[-1]: item["error"] for item in summary["failed"]}
    assert set(reasons) == set(BAD)
    for name, word in BAD.items():
        assert "\n" not in reasons[name] and name in reasons[name], reasons[name]
        assert word.lower() in reasons[name].lower(), reasons[name]
    # nothing written for a bad file, no temporary file left anywhere
    for name in BAD:
        stem = name.split(".")[0]
        assert not list(out.glob(f"{stem}.*")), name
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_landmarks_match_the_ground_truth(cohort, first_run):
    """Every landmark within 10 mm and the mean error under 2.5 mm.

    The bound: the shipped pipeline's held-out figures (model card: median ~1.2 mm, 95th percentile
    ~3.5 mm, no knee beyond 10 mm in 60 radiographs) with room for 5 knees' sampling noise.
    """
    _, truth = cohort
    out, _ = first_run
    errors = []
    for stem, _, knees, sub in GOOD:
        prediction = json.loads((out / sub / f"{stem}.json").read_text())
        sample = next(s for p, s in truth.items() if p.endswith(f"{stem}.dcm"))
        spacing = np.array(sample.pixel_spacing_mm[::-1])
        for side in ("R", "L"):
            knee = prediction["knees"][side]
            assert knee["present"] == (side in knees), (stem, side)
            if not knee["present"]:
                assert "no knee" in knee["reason"]
                continue
            px = np.array(knee["landmarks_px"])
            errors.append(landmark_errors_mm(px[None], np.array(sample.knees[side]["landmarks_px"])[None],
                                             spacing[None])[0])
            # mm are pixels times the spacing, measurements are those of the mm landmarks
            np.testing.assert_allclose(knee["landmarks_mm"], px * spacing, atol=1e-3)
            expected = knee_measurements(np.array(knee["landmarks_mm"]))
            for name in MEASUREMENTS:
                assert knee["measurements"][name] == pytest.approx(expected[name], abs=1e-3)
            assert knee["quality"] in ("ok", "check")
    errors = np.concatenate(errors)
    assert errors.max() < 10.0 and errors.mean() < 2.5, (errors.max(), errors.mean())


def test_cohort_csv_rows_and_columns(cohort, first_run):
    out, _ = first_run
    header, rows = read_cohort_csv(out / "cohort.csv")
    assert tuple(header) == COHORT_COLUMNS
    by_status = {}
    for row in rows:
        by_status.setdefault(row["status"], []).append(row)
    assert len(by_status["ok"]) == 5 and len(by_status["absent"]) == 1 and len(by_status["failed"]) == len(BAD)
    assert by_status["absent"][0]["file"].endswith("right_only.dcm") and by_status["absent"][0]["side"] == "L"
    for row in by_status["ok"]:
        sr, sc = float(row["pixel_spacing_row_mm"]), float(row["pixel_spacing_col_mm"])
        for i in range(16):
            assert float(row[f"x{i}_mm"]) == pytest.approx(float(row[f"x{i}_px"]) * sc, abs=2e-3)
            assert float(row[f"y{i}_mm"]) == pytest.approx(float(row[f"y{i}_px"]) * sr, abs=2e-3)
            assert 0 <= float(row[f"confidence{i}"]) <= 1 and row[f"spread{i}_mm"] == ""
        assert 50 < float(row["tibial_plateau_width_mm"]) < 110
        assert row["quality"] in ("ok", "check")
    for row in by_status["failed"]:
        assert row["reason"] and row["x0_px"] == ""


def test_markups_are_schema_valid(first_run, markups_schema):
    out, _ = first_run
    files = sorted(out.rglob("*.mrk.json"))
    assert len(files) == len(GOOD)
    for path in files:
        jsonschema.validate(json.loads(path.read_text()), markups_schema)


def test_rerun_skips_what_is_done_and_finishes_the_rest(cohort, first_run, tmp_path):
    root, _ = cohort
    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    (out / "site2" / "bilateral_b.json").unlink()  # as if interrupted before this radiograph was done
    assert main(["predict", str(root), "--out", str(out), "--device", "cpu", "--workers", "0",
                 "--no-progress"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_skipped"] == 2 and summary["n_ok"] == 1
    assert summary["results"][0]["input"].endswith("bilateral_b.dcm")
    for p, stamp in stamps.items():
        if "bilateral_b" not in p.name:
            assert p.stat().st_mtime_ns == stamp, p  # untouched
    _, rows = read_cohort_csv(out / "cohort.csv")
    assert sum(r["status"] == "ok" for r in rows) == 5  # the cohort table covers skipped files too

    assert main(["predict", str(root), "--out", str(out), "--device", "cpu", "--workers", "0", "--no-progress",
                 "--overwrite", "--format", "json,csv"]) == 1
    assert json.loads((out / "summary.json").read_text())["n_ok"] == len(GOOD)


def test_interrupted_run_leaves_complete_outputs_only(cohort, tmp_path):
    """Ctrl-C while the second radiograph is predicted: the first is complete, the second absent; a re-run ends it."""
    root, _ = cohort
    predictor = KneelPredictor(*default_model_dirs(), device="cpu")
    inputs = [root / "bilateral_a.dcm", root / "site2" / "bilateral_b.dcm"]

    class CtrlC:
        calls = 0

        def predict_image(self, image, path):
            CtrlC.calls += 1
            if CtrlC.calls == 2:
                raise KeyboardInterrupt
            return predictor.predict_image(image, path)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict_paths(CtrlC(), inputs, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["bilateral_a.json", "bilateral_a.mrk.json", "bilateral_a.png",
                                                     "cohort.csv", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["n_ok"] == 1 and summary["n_pending"] == 1
    again = predict_paths(predictor, inputs, out, progress=False)
    assert again["n_skipped"] == 1 and again["n_ok"] == 1 and not again["failed"]


def test_csv_list_input_and_model_choices(cohort, tmp_path):
    root, _ = cohort
    listing = tmp_path / "list.csv"
    listing.write_text(f"subject,path\nA,{root / 'bilateral_a.dcm'}\nB,missing.dcm\n")
    code = main(["predict", str(listing), "--out", str(tmp_path / "o"), "--device", "cpu", "--no-progress",
                 "--no-refine", "--format", "json", "--model", str(default_model_dirs()[1].parents[1])])
    assert code == 1
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n_ok"] == 1 and "missing.dcm: no such file (listed in" in summary["failed"][0]["error"]
    assert not (tmp_path / "o" / "cohort.csv").exists() and not (tmp_path / "o" / "bilateral_a.png").exists()
    detection = json.loads((tmp_path / "o" / "bilateral_a.json").read_text())["detection"]
    assert detection["refined"] is False  # --no-refine

    roi, landmarks = default_model_dirs()
    assert resolve_model_dirs(None) == (roi, landmarks)
    assert resolve_model_dirs(landmarks.parents[1]) == (roi, landmarks)  # the bundle folder
    pair = tmp_path / "pair"
    shutil.copytree(roi, pair / "roi")
    shutil.copytree(landmarks, pair / "landmarks")
    assert resolve_model_dirs(pair) == (pair / "roi", pair / "landmarks")
    assert resolve_model_dirs(pair / "landmarks") == (roi, pair / "landmarks")
    assert resolve_model_dirs(pair / "landmarks", roi_model=pair / "roi") == (pair / "roi", pair / "landmarks")
    release = tmp_path / "release_snapshot"
    release.mkdir()
    (release / "session.pkl").write_bytes(b"")
    with pytest.raises(ValueError, match="convert-release"):
        resolve_model_dirs(release)
    with pytest.raises(ValueError, match="not a kneel-monai model"):
        resolve_model_dirs(tmp_path)


def test_bad_arguments_are_one_line_errors(cohort, tmp_path, capsys):
    root, _ = cohort
    assert main(["predict", str(root / "bilateral_a.dcm"), "--out", str(tmp_path), "--format", "json,xml"]) == 2
    assert "unknown xml" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["predict", str(root / "bilateral_a.dcm"), "--out", str(tmp_path), "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    assert main(["predict", str(root / "bilateral_a.dcm"), "--out", str(tmp_path), "--model",
                 str(tmp_path / "nowhere")]) == 2
    assert "model folder not found" in capsys.readouterr().err


def test_mc_dropout_spread_is_in_millimetres():
    """The same knee at 0.5 mm and, averaged 2 x 2, at 1 mm pixels (both read as they are, no working-image
    resampling), with the same dropout draws: about the same spread in mm (in pixels it would double)."""
    import torch.nn.functional as F
    from monai.data import MetaTensor

    from kneel_monai.synthetic.generate import generate_radiograph
    from kneel_monai.transforms import points_between

    sample = generate_radiograph(4_400_001, spacing_mm=0.5, size=(560, 800))
    fine = torch.from_numpy(sample.image.astype(np.float32))[None]
    coarse = F.avg_pool2d(fine[None], 2)[0]
    predictor = KneelPredictor(*default_model_dirs(), device="cpu")
    centre = np.asarray(sample.knees["R"]["landmarks_px"])[4]
    spreads = []
    for pixels, spacing, at in ((fine, 0.5, centre), (coarse, 1.0, (centre + 0.5) / 2 - 0.5)):
        image = MetaTensor(pixels, affine=torch.diag(torch.tensor([spacing, spacing, 1.0], dtype=torch.float64)))
        work = predictor.working_image(predictor._normalise(image))
        assert work.shape == image.shape  # the spread is computed on the radiograph's own pixels
        start = points_between(np.asarray(at, dtype=float)[None], image.affine, work.affine)[0]
        torch.manual_seed(0)
        spreads.append(predictor.landmark_spread(work, {"R": start}, samples=8)["R"])
    assert spreads[0].max() > 0.05
    ratio = float(np.median(spreads[1] / spreads[0]))
    assert 0.7 < ratio < 1.4, ratio


def test_mc_dropout_spread(cohort):
    root, _ = cohort
    predictor = KneelPredictor(*default_model_dirs(), device="cpu", mc_samples=4)
    result = predictor.predict_file(root / "bilateral_a.dcm")
    for knee in result.knees.values():
        assert knee.spread_mm.shape == (16,) and (knee.spread_mm >= 0).all() and knee.spread_mm.max() > 0
    assert result.to_dict()["knees"]["R"]["spread_mm"] is not None
    with pytest.raises(ValueError, match="mc_samples"):
        KneelPredictor(*default_model_dirs(), device="cpu", mc_samples=1)


def test_csv_list_carries_a_spacing_per_file(cohort, tmp_path):
    """JPEG/PNG exports have no spacing: a CSV row gives it; a garbage value fails that row only."""
    root, truth = cohort
    sample = truth[str(root / "bilateral_a.dcm")]
    export = tmp_path / "export.png"
    Image.fromarray(np.round(sample.image * 65535).astype(np.uint16)).save(export)
    listing = tmp_path / "list.csv"
    listing.write_text("path,spacing_mm\n"
                       f"{export},0.2\n"
                       f"{root / 'site2' / 'bilateral_b.dcm'},\n"
                       f"{root / 'right_only.dcm'},abc\n"
                       f"{root / 'no_spacing.png'},-1\n")
    code = main(["predict", str(listing), "--out", str(tmp_path / "o"), "--device", "cpu", "--no-progress",
                 "--format", "json"])
    assert code == 1
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n_ok"] == 2 and summary["n_failed"] == 2
    reasons = " | ".join(f["error"] for f in summary["failed"])
    assert "bad pixel spacing 'abc'" in reasons and "line 4" in reasons and "bad pixel spacing '-1'" in reasons
    result = json.loads((tmp_path / "o" / "export.json").read_text())
    assert result["pixel_spacing_mm"] == [0.2, 0.2] and result["spacing_source"] == "user"
    knee = result["knees"]["R"]
    assert knee["present"]
    errors = np.linalg.norm((np.asarray(knee["landmarks_px"]) - sample.knees["R"]["landmarks_px"]) * 0.2, axis=1)
    assert np.median(errors) < 2.0  # the PNG at its CSV spacing is the DICOM's radiograph
    dicom = json.loads((tmp_path / "o" / "bilateral_b.json").read_text())
    assert dicom["spacing_source"] != "user"  # an empty cell leaves the file's own spacing


@pytest.mark.parametrize("stage_name", ["landmarks_cpu_clahe", "landmarks_cpu_roi_scaled", "shipped"])
def test_inference_crops_exactly_what_training_and_evaluation_feed_the_network(cohort, tmp_path, stage_name):
    """One geometry: the landmark crop the predictor cuts (ROI, mirror, ROI scaling, CLAHE, pad, crop) equals
    the evaluation/training chain's for the same knee and centre, for each stage a model file can declare."""
    from kneel_monai.io import read_radiograph
    from kneel_monai.model_io import load_model
    from kneel_monai.training.evaluation import stage_of_model
    from kneel_monai.training.stages import STAGES, stage_transforms

    root, truth = cohort
    path, sample = next(iter(truth.items()))
    model = load_model(default_model_dirs()[1])
    if stage_name != "shipped":
        model.preprocessing = STAGES[stage_name].preprocessing
    predictor = KneelPredictor(default_model_dirs()[0], model, device="cpu")
    chain = stage_transforms(stage_of_model(model), train=False)
    norm = predictor._normalise(read_radiograph(path))
    for side in ("R", "L"):
        points = np.asarray(sample.knees[side]["landmarks_px"])
        fed = chain({"image": path, "side": side, "landmarks_px": points.tolist()})["image"]
        cut = predictor._landmark_crops(norm, [(side, points[4])])[0]
        assert fed.shape == cut.shape == (1, 224, 224)
        np.testing.assert_allclose(cut.numpy(), fed.numpy(), atol=1e-5)
        np.testing.assert_allclose(cut.affine.numpy(), fed.affine.numpy(), atol=1e-9)


@pytest.mark.parametrize("stage_name", ["roi_cpu", "roi_cpu_clahe"])
def test_stage1_reads_exactly_what_training_feeds_the_roi_network(cohort, stage_name):
    """One geometry for stage 1 too: the predictor's two half inputs (resampled, equalised when the model file
    says, halved, padded, cropped) equal the ROI training/evaluation chain's, and so does their affine."""
    from kneel_monai.io import read_radiograph
    from kneel_monai.model_io import load_model
    from kneel_monai.training.evaluation import stage_of_model
    from kneel_monai.training.stages import STAGES, stage_transforms

    root, truth = cohort
    path, sample = next(iter(truth.items()))
    roi = load_model(default_model_dirs()[0])
    roi.preprocessing = STAGES[stage_name].preprocessing
    predictor = KneelPredictor(roi, default_model_dirs()[1], device="cpu")
    chain = stage_transforms(stage_of_model(roi), train=False)
    centres = {s: sample.knees[s]["landmarks_px"][4].tolist() for s in ("R", "L")}
    fed = chain({"image": path, "knee_centres_px": centres})
    read = predictor._stage1_inputs(predictor._normalise(read_radiograph(path)), whole=False)
    assert len(fed) == len(read) == 2
    for f, r in zip(fed, read):
        assert f["image"].shape == r.shape == (1, 112, 112)
        np.testing.assert_allclose(r.numpy(), f["image"].numpy(), atol=1e-5)
        np.testing.assert_allclose(r.affine.numpy(), f["image"].affine.numpy(), atol=1e-9)
    other = load_model(default_model_dirs()[0])  # the same model with the other stage's preprocessing
    other.preprocessing = STAGES["roi_cpu" if stage_name == "roi_cpu_clahe" else "roi_cpu_clahe"].preprocessing
    unlike = KneelPredictor(other, default_model_dirs()[1], device="cpu")
    # and the equalisation is really there (or not)
    assert np.abs(unlike._stage1_inputs(predictor._normalise(read_radiograph(path)), False)[0].numpy()
                  - read[0].numpy()).max() > 0.2


def test_cli_spacing_and_ensemble_options(tmp_path):
    """``--spacing ROW COL`` is what a PNG is measured with (and said so); ``--ensemble`` averages every fold of a
    multi-fold model, without it the first fold alone answers."""
    import safetensors.torch

    from kneel_monai.synthetic.generate import generate_radiograph, write_radiograph

    sample = generate_radiograph(4_500_002, spacing_mm=(0.25, 0.2), size=(1100, 1500))
    png, _ = write_radiograph(sample, tmp_path, "knee", fmt="png")
    assert main(["predict", str(png), "--out", str(tmp_path / "s"), "--spacing", "0.25", "0.2", "--format", "json",
                 "--device", "cpu", "--workers", "0", "--no-progress"]) == 0
    result = json.loads((tmp_path / "s" / "knee.json").read_text())
    assert result["pixel_spacing_mm"] == [0.25, 0.2] and result["spacing_source"] == "user"
    errors = np.linalg.norm((np.asarray(result["knees"]["R"]["landmarks_px"]) - sample.knees["R"]["landmarks_px"])
                            * [0.2, 0.25], axis=1)
    assert np.median(errors) < 2.0

    models = tmp_path / "models"  # the shipped models, the landmark model with a second, perturbed fold
    shutil.copytree(default_model_dirs()[0], models / "roi")
    shutil.copytree(default_model_dirs()[0].parent / "roi_synthetic", models / "roi_synthetic")  # its fallback
    shutil.copytree(default_model_dirs()[1], models / "landmarks")
    weights = safetensors.torch.load_file(str(models / "landmarks" / "fold_0.safetensors"))
    torch.manual_seed(0)
    weights = {k: v + 0.002 * torch.randn_like(v.float()).to(v.dtype) if k.startswith("out_conv") else v
               for k, v in weights.items()}
    safetensors.torch.save_file(weights, str(models / "landmarks" / "fold_1.safetensors"))
    config = json.loads((models / "landmarks" / "model.json").read_text())
    config["weights"] = ["fold_0.safetensors", "fold_1.safetensors"]
    (models / "landmarks" / "model.json").write_text(json.dumps(config))
    answers = {}
    for name, extra in (("first", []), ("ensemble", ["--ensemble"]), ("shipped", None)):
        model = [] if extra is None else ["--model", str(models)] + extra
        assert main(["predict", str(png), "--out", str(tmp_path / name), "--spacing", "0.25", "0.2", "--format",
                     "json", "--device", "cpu", "--workers", "0", "--no-progress", *model]) == 0
        answers[name] = np.asarray(json.loads((tmp_path / name / "knee.json").read_text())["knees"]["R"]
                                   ["landmarks_px"])
    np.testing.assert_allclose(answers["first"], answers["shipped"], atol=1e-6)  # fold 0 alone: the shipped model
    assert np.abs(answers["ensemble"] - answers["first"]).max() > 0.05  # the second fold moved the average


def test_field_size_gives_each_export_its_own_spacing(tmp_path, capsys):
    """A folder of JPEG/PNG exports of different sizes: ``--field-width-mm`` gives each its own spacing (the field
    over its own width), so the same film exported at full and half size gives the same knees in mm; a file with a
    spacing of its own keeps it; contradicting or impossible options are refused."""
    from pathlib import Path

    from kneel_monai.io import read_image

    sample = Path(__file__).resolve().parents[1] / "samples" / "synthetic_bilateral_knee.dcm"
    image = read_image(sample)
    pixels = image.numpy()[0]
    grey = ((pixels - pixels.min()) / (pixels.max() - pixels.min()) * 255).round().astype(np.uint8)
    films = tmp_path / "films"
    films.mkdir()
    full = Image.fromarray(grey)
    full.save(films / "full.png")
    full.resize((full.width // 2, full.height // 2), Image.LANCZOS).save(films / "half.png")
    shutil.copy(sample, films / "own.dcm")
    width_mm = image.meta["pixel_spacing_mm"][1] * full.width
    assert main(["predict", str(films), "--out", str(tmp_path / "o"), "--field-width-mm", str(width_mm),
                 "--format", "json,csv", "--no-progress", "--workers", "0"]) == 0
    out = {name: json.loads((tmp_path / "o" / f"{name}.json").read_text()) for name in ("full", "half", "own")}
    assert out["full"]["spacing_source"] == out["half"]["spacing_source"] == "field_width"
    assert out["own"]["spacing_source"] == image.meta["spacing_source"]
    np.testing.assert_allclose(out["full"]["pixel_spacing_mm"], image.meta["pixel_spacing_mm"], rtol=1e-6)
    np.testing.assert_allclose(out["half"]["pixel_spacing_mm"], width_mm / (full.width // 2), rtol=1e-6)
    for side in ("R", "L"):
        a, b = (np.asarray(out[n]["knees"][side]["landmarks_mm"]) for n in ("full", "half"))
        assert np.median(np.linalg.norm(a - b, axis=1)) < 1.5  # the same knee in the same millimetres
    with open(tmp_path / "o" / "cohort.csv", newline="") as f:
        assert {r["spacing_source"] for r in csv.DictReader(f) if r["file"].endswith(".png")} == {"field_width"}
    capsys.readouterr()
    for bad in (["--field-width-mm", "390", "--spacing", "0.2"], ["--field-width-mm", "0"],
                ["--field-width-mm", "390", "--field-height-mm", "270"]):
        assert main(["predict", str(films), "--out", str(tmp_path / "x"), *bad]) == 2
        assert "--field-width-mm" in capsys.readouterr().err
