"""Synthetic radiographs: shape model, renderer, ground truth, writers, cohort and CLI hook."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from kneel_monai.synthetic.anatomy import catmull_rom
from kneel_monai.synthetic.generate import (
    generate_dataset,
    generate_radiograph,
    ground_truth_dict,
    to_uint,
    write_radiograph,
)
from kneel_monai.synthetic.shape_model import (
    aligned_csv_shapes,
    fit_shape_model,
    joint_space_widths_mm,
    load_shape_model,
    sample_knee_shape,
)

# 300 x 390 mm at 0.3 mm: a real-sized field, rendered fast
SMALL = {"size": (1000, 1300), "spacing_mm": 0.3}


@pytest.fixture(scope="module")
def csv_path(kneel_csv_path):
    return kneel_csv_path


@pytest.fixture(scope="module")
def bilateral():
    return generate_radiograph(7, **SMALL)


# --- shape model ---------------------------------------------------------------------------


def test_shipped_model_matches_refit(csv_path):
    shipped = load_shape_model()
    refit = fit_shape_model(csv_path)
    assert shipped.n_components == refit.n_components
    np.testing.assert_allclose(shipped.mean, refit.mean, atol=1e-6)
    np.testing.assert_allclose(shipped.variances, refit.variances, rtol=1e-6)
    np.testing.assert_allclose(shipped.components, refit.components, atol=1e-6)
    np.testing.assert_allclose(shipped.kl_score_means, refit.kl_score_means, atol=1e-6)
    np.testing.assert_allclose(shipped.within_kl_covariance, refit.within_kl_covariance, atol=1e-6)
    assert shipped.rotation_std_deg == pytest.approx(refit.rotation_std_deg, rel=1e-6)
    assert shipped.source["n_knees"] == 748


def test_samples_reproduce_csv_mean_and_covariance(csv_path):
    model = load_shape_model()
    _, aligned, kl = aligned_csv_shapes(csv_path)
    data = aligned.reshape(len(aligned), -1)
    rng = np.random.default_rng(0)
    grades = rng.choice(np.asarray(model.kl_grades), size=40000, p=model.kl_frequencies)
    scores = np.concatenate([model.sample_scores(rng, int(g), n=int((grades == g).sum())) for g in model.kl_grades])
    samples = model.shape_from_scores(scores).reshape(len(scores), -1)
    assert np.abs(samples.mean(0) - data.mean(0)).max() < 0.25  # mm
    cov_s, cov_d = np.cov(samples.T), np.cov(data.T)
    # 98 % of the variance is modelled: the covariance matches to a few per cent
    assert np.linalg.norm(cov_s - cov_d) / np.linalg.norm(cov_d) < 0.06
    # per-grade joint-space widths follow the data
    for g in (0, 4):
        jsw_d = joint_space_widths_mm(aligned[kl == g]).mean(0)
        jsw_s = joint_space_widths_mm(model.shape_from_scores(model.sample_scores(rng, g, n=5000))).mean(0)
        np.testing.assert_allclose(jsw_s, jsw_d, atol=0.25)


def test_sample_knee_shape_kl_dependence_without_csv():
    model = load_shape_model()
    rng = np.random.default_rng(1)
    shapes = {g: np.stack([sample_knee_shape(rng, g) for _ in range(400)]) for g in (0, 4)}
    for s in shapes.values():
        assert s.shape == (400, 16, 2)
        assert np.all(s[:, 4] == 0.0)  # landmark 4 is the origin
        assert np.all(s[:, 8, 0] - s[:, 0, 0] > 50)  # lateral (−x) to medial (+x), tens of mm wide
    med = {g: joint_space_widths_mm(s)[:, 1].mean() for g, s in shapes.items()}
    assert med[4] < med[0] - 1.5  # medial joint-space narrowing
    assert med[0] == pytest.approx(model.kl_stats["0"]["jsw_medial_mm"][0], abs=0.3)
    assert med[4] == pytest.approx(model.kl_stats["4"]["jsw_medial_mm"][0], abs=0.4)


def test_catmull_rom_passes_through_control_points():
    pts = np.array([[0, 0], [10, 1], [20, -3], [25, 8], [5, 12.5]], dtype=float)
    curve = catmull_rom(pts, closed=True, spacing=0.3)
    for p in pts:
        assert np.hypot(*(curve - p).T).min() == 0.0
    assert np.hypot(*np.diff(curve, axis=0).T).max() < 2 * 0.3  # "about every spacing" (uniform in the parameter)


# --- radiographs ---------------------------------------------------------------------------


def test_same_seed_same_radiograph_different_seed_differs(bilateral):
    again = generate_radiograph(7, **SMALL)
    assert again.image.dtype == np.float32 and again.image.shape == (1000, 1300)
    assert np.array_equal(again.image, bilateral.image)
    assert json.dumps(ground_truth_dict(again, "a.png")) == json.dumps(ground_truth_dict(bilateral, "a.png"))
    other = generate_radiograph(8, **SMALL)
    assert not np.array_equal(other.image, bilateral.image)
    assert not np.allclose(other.knees["R"]["landmarks_px"], bilateral.knees["R"]["landmarks_px"])


def test_image_range_and_landmark_conventions(bilateral):
    img = bilateral.image
    H, W = img.shape
    assert 0.0 <= img.min() and img.max() <= 1.0
    right, left = bilateral.knees["R"]["landmarks_px"], bilateral.knees["L"]["landmarks_px"]
    for pts in (right, left):
        assert pts.shape == (16, 2)
        assert np.all((pts[:, 0] > 0) & (pts[:, 0] < W - 1) & (pts[:, 1] > 0) & (pts[:, 1] < H - 1))
        assert pts[12, 1] < pts[4, 1]  # femoral notch above the tibial centre
    assert np.all(right[:, 0] < W / 2) and np.all(left[:, 0] > W / 2)  # patient's right knee on the image's left
    assert right[0, 0] < right[8, 0] and right[9, 0] < right[15, 0]  # right knee: lateral (id 0) at smaller x
    assert left[0, 0] > left[8, 0] and left[9, 0] > left[15, 0]  # left knee mirrored: id 0 at larger x
    sep_mm = (left[4, 0] - right[4, 0]) * bilateral.pixel_spacing_mm[1]
    assert 130 <= sep_mm <= 200
    assert 0.25 * H < right[4, 1] < 0.65 * H


def _gradient(img, sigma_px):
    sm = ndimage.gaussian_filter(img.astype(np.float64), sigma_px)
    return np.hypot(ndimage.sobel(sm, 0), ndimage.sobel(sm, 1)) / 8.0, sm


@pytest.mark.parametrize("seed", [3, 11])
def test_landmarks_sit_on_bone_edges(seed):
    sample = generate_radiograph(seed, size=(1400, 1800), spacing_mm=0.2)
    sp = sample.pixel_spacing_mm[0]
    grad, sm = _gradient(sample.image, 0.4 / sp)
    for side in ("R", "L"):
        pts = sample.knees[side]["landmarks_px"]
        # the strongest edge within 0.6 mm of each landmark vs the knee region's gradients
        c = pts.mean(0)
        half = int(60 / sp)
        region = grad[int(c[1]) - half : int(c[1]) + half, int(c[0]) - half : int(c[0]) + half]
        p90 = np.percentile(region, 90)
        rad = max(1, int(round(0.6 / sp)))
        at = np.array([grad[int(round(y)) - rad : int(round(y)) + rad + 1,
                            int(round(x)) - rad : int(round(x)) + rad + 1].max()
                       for x, y in pts])
        assert np.median(at) > p90, f"{side}: landmarks are not on the strongest edges"
        # negative control: the same pattern moved 6 mm sideways is not on edges
        off = pts + [6.0 / sp, -8.0 / sp]
        at_off = np.array([grad[int(round(y)) - rad : int(round(y)) + rad + 1,
                                int(round(x)) - rad : int(round(x)) + rad + 1].max()
                           for x, y in off])
        assert np.median(at) > 1.5 * np.median(at_off)
        # bone is on the right side of the edge: below the tibial plateau, above the femoral condyles
        d = int(round(1.2 / sp))
        for i in (1, 7):  # tibial plateau, lateral and medial
            x, y = (int(round(v)) for v in pts[i])
            assert sm[y + d, x] > sm[y - d, x] + 0.02
        for i in (10, 14):  # femoral condyles
            x, y = (int(round(v)) for v in pts[i])
            assert sm[y - d, x] > sm[y + d, x] + 0.02


def test_single_knee_image():
    sample = generate_radiograph(5, knees=("L",), **SMALL)
    assert sample.knees["R"] is None
    gt = ground_truth_dict(sample, "x.dcm")
    assert gt["knees"]["R"] is None and len(gt["knees"]["L"]["landmarks_px"]) == 16
    W = sample.image.shape[1]
    assert np.all(sample.knees["L"]["landmarks_px"][:, 0] > W / 2)
    rows = slice(int(0.2 * sample.image.shape[0]), int(0.8 * sample.image.shape[0]))
    # away from the borders (collimation strips): no leg on the right knee's side, a leg on the left's
    left, right = sample.image[rows, int(0.12 * W) : int(0.4 * W)], sample.image[rows, int(0.6 * W) : int(0.88 * W)]
    assert np.percentile(left, 75) < np.percentile(right, 75) - 0.15
    with pytest.raises(ValueError):
        generate_radiograph(5, knees=("X",), **SMALL)
    with pytest.raises(ValueError):
        generate_radiograph(-1, **SMALL)


def test_kl_grade_narrows_joint_space_and_adds_osteophytes():
    for seed in (0, 1):
        s0 = generate_radiograph(seed, kl=0, **SMALL)
        s4 = generate_radiograph(seed, kl=4, **SMALL)
        for side in ("R", "L"):
            sp = s0.pixel_spacing_mm[0]
            med0 = (s0.knees[side]["landmarks_px"][7, 1] - s0.knees[side]["landmarks_px"][14, 1]) * sp
            med4 = (s4.knees[side]["landmarks_px"][7, 1] - s4.knees[side]["landmarks_px"][14, 1]) * sp
            assert med4 < med0 - 1.0
            assert s4.knees[side]["kl"] == 4 and s0.knees[side]["kl"] == 0
            assert max(s0.params["knees"][side]["anatomy"]["osteophytes_mm"].values()) == 0.0
            assert min(s4.params["knees"][side]["anatomy"]["osteophytes_mm"].values()) > 1.0


def test_real_size_defaults():
    sample = generate_radiograph(21)
    H, W = sample.image.shape
    assert 2000 <= H <= 2900 and 2000 <= W <= 2900
    assert 0.139 <= sample.pixel_spacing_mm[0] <= 0.2


# --- writers -------------------------------------------------------------------------------


def test_png_and_json_round_trip(tmp_path, bilateral):
    img_path, json_path = write_radiograph(bilateral, tmp_path, "knee", "png")
    assert img_path.name == "knee.png" and json_path.name == "knee.json"
    back = np.asarray(Image.open(img_path))
    assert back.dtype == np.uint16 and back.shape == bilateral.image.shape
    assert np.array_equal(back, to_uint(bilateral.image, 16))
    gt = json.loads(json_path.read_text())
    assert gt["format"] == "kneel-monai/ground-truth" and gt["format_version"] == 1
    assert gt["image"] == "knee.png" and gt["synthetic"] is True and gt["seed"] == 7
    assert gt["image_size"] == [1000, 1300] and gt["pixel_spacing_mm"] == [0.3, 0.3]
    np.testing.assert_array_equal(np.asarray(gt["knees"]["R"]["landmarks_px"]), bilateral.knees["R"]["landmarks_px"])
    assert gt["knees"]["L"]["kl"] == bilateral.knees["L"]["kl"]
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files


def test_dicom_round_trip(tmp_path):
    import pydicom

    sample = generate_radiograph(9, knees=("R",), size=(700, 900), spacing_mm=(0.2, 0.21))
    img_path, json_path = write_radiograph(sample, tmp_path, "knee", "dcm", photometric="MONOCHROME1",
                                           bits_stored=14, modality="CR", transfer_syntax="rle_lossless")
    ds = pydicom.dcmread(img_path)
    expected = to_uint(sample.image, 14).astype(np.int64)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 14 and ds.Modality == "CR"
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.2, 0.21]
    assert np.array_equal(ds.pixel_array.astype(np.int64), (1 << 14) - 1 - expected)  # inverted on disk
    assert json.loads(json_path.read_text())["image"] == "knee.dcm"
    # same seed, same options: identical file (UIDs derive from the seed)
    again, _ = write_radiograph(sample, tmp_path / "again", "knee", "dcm", photometric="MONOCHROME1",
                                bits_stored=14, modality="CR", transfer_syntax="rle_lossless")
    assert again.read_bytes() == img_path.read_bytes()
    from kneel_monai import io as reading

    mt = reading.read_radiograph(img_path)
    assert np.array_equal(np.asarray(mt[0]).astype(np.int64), expected)
    assert tuple(mt.meta["pixel_spacing_mm"]) == (0.2, 0.21)


def test_generate_dataset_through_cli_hook(tmp_path, capsys):
    from kneel_monai.synthetic.cli import add_synth_parser

    parser = argparse.ArgumentParser(prog="kneel")
    add_synth_parser(parser.add_subparsers(dest="command", required=True))
    args = ["--n", "3", "--seed", "4", "--format", "mixed", "--single-knee-fraction", "0.5",
            "--size", "700", "900", "--spacing", "0.4", "--no-progress"]
    ns = parser.parse_args(["synth", str(tmp_path / "a"), *args])
    assert ns.func(ns) == 0
    assert "wrote 3 radiographs" in capsys.readouterr().out
    index = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert index["format"] == "kneel-monai/synthetic-dataset" and len(index["items"]) == 3
    for item in index["items"]:
        assert (tmp_path / "a" / item["image"]).is_file()
        gt = json.loads((tmp_path / "a" / item["ground_truth"]).read_text())
        assert gt["image"] == item["image"] and gt["image_size"] == [700, 900]
        assert {k: (None if v is None else v["kl"]) for k, v in gt["knees"].items()} == item["knees"]
        if item["format"] == "dcm":
            assert set(item["dicom"]) >= {"photometric", "bits_stored", "modality", "transfer_syntax"}
    # the cohort is deterministic
    ns = parser.parse_args(["synth", str(tmp_path / "b"), *args])
    ns.func(ns)
    assert (tmp_path / "b" / "dataset.json").read_text() == (tmp_path / "a" / "dataset.json").read_text()
    for item in index["items"]:
        assert (tmp_path / "a" / item["image"]).read_bytes() == (tmp_path / "b" / item["image"]).read_bytes()
    # a field too narrow for two knees is a one-line error, exit code 2
    ns = parser.parse_args(["synth", str(tmp_path / "c"), "--n", "1", "--size", "700", "500", "--spacing", "0.3",
                            "--single-knee-fraction", "0", "--no-progress"])
    assert ns.func(ns) == 2
    assert "too narrow for two knees" in capsys.readouterr().err


def test_dataset_png_only_needs_no_dicom(tmp_path):
    path = generate_dataset(tmp_path, 2, seed=1, fmt="png", size=(700, 900), spacing_mm=0.4, progress=False)
    index = json.loads(path.read_text())
    assert [it["format"] for it in index["items"]] == ["png", "png"]
    assert all((tmp_path / it["image"]).suffix == ".png" for it in index["items"])
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, 1, fmt="jpg")
