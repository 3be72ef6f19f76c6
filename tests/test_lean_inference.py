"""Inference without importing MONAI (issue 18): ``kneel predict`` and the warm worker never load it, and the
MONAI-free image (:class:`AffineImage`) gives exactly what the ``MetaTensor`` gives, transform by transform and
end to end."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from imaging import radiograph
from monai.data import MetaTensor
from monai.transforms import CenterSpatialCrop, SpatialPad

from kneel_monai.image import AffineImage, image_like, is_metatensor
from kneel_monai.inference import KneelPredictor, default_model_dirs
from kneel_monai.io import read_image, read_radiograph
from kneel_monai.transforms import functional as KF

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "synthetic_bilateral_knee.dcm"

LEAN_RUN = """
import io, json, sys
from kneel_monai.cli import main
code = main(["predict", sys.argv[1], "--out", sys.argv[2]])  # every default output: JSON, overlay, markups, CSV
from kneel_monai.inference import KneelPredictor, resolve_model_dirs
from kneel_monai.worker import serve
answers = io.StringIO()
serve(KneelPredictor(*resolve_model_dirs(None), device="cpu"),
      [json.dumps({"id": "1", "input": sys.argv[1], "out": sys.argv[3]})], answers)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("monai", "ignite", "matplotlib", "scipy"))
print(json.dumps({"code": code, "answer": json.loads(answers.getvalue()), "loaded": loaded,
                  "training": sorted(m for m in sys.modules if m.startswith("kneel_monai.training"))}))
"""


def test_predict_and_worker_do_not_import_monai(tmp_path):
    run = subprocess.run([sys.executable, "-c", LEAN_RUN, str(SAMPLE), str(tmp_path / "cli"), str(tmp_path / "worker")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["code"] == 0 and report["answer"]["ok"], report
    assert report["loaded"] == [] and report["training"] == []  # none of MONAI, ignite, matplotlib, scipy
    stem = SAMPLE.stem
    for name in (f"{stem}.json", f"{stem}.png", f"{stem}.mrk.json", "cohort.csv"):
        assert (tmp_path / "cli" / name).stat().st_size > 0
    cli = json.loads((tmp_path / "cli" / f"{stem}.json").read_text())
    worker = json.loads((tmp_path / "worker" / f"{stem}.json").read_text())
    assert [k["present"] for k in cli["knees"].values()] == [True, True]
    for side in ("R", "L"):
        np.testing.assert_array_equal(cli["knees"][side]["landmarks_px"], worker["knees"][side]["landmarks_px"])


def test_read_image_is_read_radiograph_without_monai(tmp_path):
    from PIL import Image

    png = tmp_path / "knee.png"
    Image.fromarray((np.arange(60 * 80).reshape(60, 80) % 251).astype(np.uint8)).save(png)
    for path, spacing in ((SAMPLE, None), (png, (0.2, 0.15))):
        lean, full = read_image(path, spacing), read_radiograph(path, spacing)
        assert isinstance(lean, AffineImage) and isinstance(full, MetaTensor)
        assert torch.equal(lean.as_tensor(), full.as_tensor()) and torch.equal(lean.affine, full.affine)
        assert set(lean.meta) <= set(full.meta) - {"affine"}  # MONAI adds its own (e.g. the space)
        for key in ("pixel_spacing_mm", "spacing_source", "filename_or_obj", "format", "laterality"):
            assert lean.meta[key] == full.meta[key]
        back = lean.to_metatensor()
        assert torch.equal(back.as_tensor(), full.as_tensor()) and torch.equal(back.affine, full.affine)
        assert set(AffineImage.of(full).meta) - {"space"} == set(lean.meta)
    with pytest.raises(ValueError, match="carrying its affine"):
        AffineImage.of(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="3×3"):
        AffineImage(torch.zeros(1, 4, 4), torch.eye(4))


@pytest.mark.parametrize("size", [(90, 70), (120, 130), (131, 97), (64, 64), (40, 200)])
def test_pad_and_centre_crop_is_monais_spatial_pad_then_centre_crop(size):
    img = radiograph(*size, spacing=(0.3, 0.25), blobs=[(size[1] / 3, size[0] / 2)])
    img.affine[:2, 2] = torch.tensor([4.0, -7.0], dtype=torch.float64)  # a crop's affine carries a translation
    monais = CenterSpatialCrop(roi_size=(100, 100))(SpatialPad(spatial_size=(128, 128))(img))
    for given in (img, AffineImage.of(img)):
        ours = KF.pad_and_centre_crop(given, 128, 100)
        assert is_metatensor(ours) == is_metatensor(given)  # the kind it was given
        assert ours.shape == monais.shape
        assert torch.equal(ours.as_tensor(), monais.as_tensor())
        np.testing.assert_allclose(ours.affine.numpy(), monais.affine.numpy(), atol=1e-12)


def test_every_functional_transform_keeps_the_kind_and_gives_the_same_answer():
    img = radiograph(blobs=[(100, 140), (330, 150)])
    img.meta["filename_or_obj"] = "knee.dcm"
    lean = AffineImage.of(img)
    steps = [
        lambda x: KF.resample_to_spacing(x, 0.7),
        lambda x: KF.crop_roi(x, (330, 150), True, 101, 0.4),
        lambda x: KF.split_halves(x)[1],
        lambda x: KF.percentile_normalise(x, 5, 99),
        lambda x: KF.local_contrast(KF.percentile_normalise(x), 8.0),
    ]
    for step in steps:
        a, b = step(img), step(lean)
        assert isinstance(a, MetaTensor) and isinstance(b, AffineImage)
        assert torch.equal(a.as_tensor(), b.as_tensor()) and torch.equal(a.affine, b.affine)
        assert b.meta["filename_or_obj"] == "knee.dcm"
    assert image_like(lean, lean.as_tensor()).meta is not lean.meta  # copied, so a step cannot change its input
    with pytest.raises(ValueError, match="knee.dcm: constant image"):
        KF.percentile_normalise(image_like(lean, torch.ones(1, 5, 5)))


def test_a_metatensor_and_an_affine_image_give_the_same_prediction():
    predictor = KneelPredictor(*default_model_dirs(), device="cpu")
    full = predictor.predict_image(read_radiograph(SAMPLE), str(SAMPLE))
    lean = predictor.predict_file(SAMPLE)
    for side in ("R", "L"):
        assert full.knees[side].present and lean.knees[side].present
        np.testing.assert_array_equal(full.knees[side].landmarks_px, lean.knees[side].landmarks_px)
        np.testing.assert_array_equal(full.knees[side].confidence, lean.knees[side].confidence)


def test_the_result_gives_the_spacing_of_the_pixels_its_landmarks_are_in():
    """An image resampled before prediction keeps the reader's metadata; the result's spacing is its affine's, so
    pixels × spacing are the same millimetres as at full size."""
    predictor = KneelPredictor(*default_model_dirs(), device="cpu")
    image = read_image(SAMPLE)
    coarse = KF.resample_to_spacing(image, 0.4)
    assert coarse.meta["pixel_spacing_mm"] == image.meta["pixel_spacing_mm"]  # stale, by design of the meta
    full, half = predictor.predict_image(image), predictor.predict_image(coarse)
    assert half.pixel_spacing_mm == pytest.approx(KF.pixel_spacing(coarse.affine))
    assert half.image_size == tuple(coarse.shape[-2:])
    for side in ("R", "L"):
        a, b = full.knees[side], half.knees[side]
        assert a.present and b.present
        assert np.median(np.linalg.norm(np.asarray(a.landmarks_mm) - np.asarray(b.landmarks_mm), axis=1)) < 1.0
