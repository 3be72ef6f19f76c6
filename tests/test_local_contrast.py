"""CLAHE as landmark-stage preprocessing: the transform, its physical tile size, and that every face applies it."""

import json
import shutil

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from kneel_monai.inference import KneelPredictor, default_model_dirs
from kneel_monai.label.server import stage_of
from kneel_monai.model_io import load_model
from kneel_monai.synthetic.generate import generate_radiograph
from kneel_monai.training.evaluation import stage_of_model
from kneel_monai.training.stages import stage_config
from kneel_monai.transforms import CropRoi, LocalContrast, LocalContrastd, PercentileNormalise

CLAHE = {"kind": "clahe", "tile_mm": 16.0, "clip_limit": 0.01}


@pytest.fixture(scope="module")
def knee_roi():
    """A 140 mm knee ROI at 0.6 mm from a synthetic radiograph, normalised to [0, 1]."""
    sample = generate_radiograph(5, spacing_mm=0.3, size=(1100, 1300))
    image = MetaTensor(torch.from_numpy(sample.image)[None], affine=torch.diag(torch.tensor([0.3, 0.3, 1.0],
                                                                                             dtype=torch.float64)))
    image = PercentileNormalise()(image)
    return CropRoi(140.0, 0.6)(image, sample.knees["R"]["landmarks_px"][4])


def test_output_range_shape_and_geometry_are_kept(knee_roi):
    out = LocalContrast()(knee_roi)
    assert out.shape == knee_roi.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out.affine, knee_roi.affine)
    assert not torch.allclose(out.as_tensor(), knee_roi.as_tensor(), atol=0.05)  # it does equalise
    d = LocalContrastd("image")({"image": knee_roi, "other": 1})
    assert torch.allclose(d["image"].as_tensor(), out.as_tensor()) and d["other"] == 1


def test_tile_is_given_in_millimetres(knee_roi):
    """The tile follows the image's spacing (from its affine), so it covers the same anatomy at any pixel size."""
    same_pixels_half_spacing = MetaTensor(knee_roi.as_tensor(), affine=torch.diag(torch.tensor([0.3, 0.3, 1.0],
                                                                                             dtype=torch.float64)))
    at_06 = LocalContrast(tile_mm=16.0)(knee_roi)
    at_03 = LocalContrast(tile_mm=8.0)(same_pixels_half_spacing)  # the same tile in pixels
    assert torch.allclose(at_06.as_tensor(), at_03.as_tensor())
    other = LocalContrast(tile_mm=16.0)(same_pixels_half_spacing)  # twice the pixels
    assert (other.as_tensor() - at_06.as_tensor()).abs().mean() > 0.01


def test_it_flattens_the_intensity_histogram(knee_roi):
    """Equalisation: the ROI's grey levels spread towards a uniform distribution."""
    def distance_to_uniform(img):
        values = np.sort(img.numpy().ravel())
        return np.abs(values - np.linspace(0, 1, values.size)).mean()

    assert distance_to_uniform(LocalContrast()(knee_roi)) < 0.9 * distance_to_uniform(knee_roi)


def test_preprocessing_spec_is_validated():
    assert LocalContrast.from_preprocessing(None) is None
    assert LocalContrast.from_preprocessing(CLAHE).tile_mm == 16.0
    with pytest.raises(ValueError, match="local contrast kind"):
        LocalContrast.from_preprocessing({"kind": "retinex"})
    with pytest.raises(ValueError, match="tile_mm"):
        LocalContrast(tile_mm=0)


@pytest.fixture
def clahe_model(tmp_path):
    """The shipped landmark model's weights declared with CLAHE preprocessing (as 0.3.0 was)."""
    src = default_model_dirs()[1]
    dst = tmp_path / "landmarks"
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "model.json").read_text())
    cfg["preprocessing"]["local_contrast"] = dict(CLAHE)
    cfg["preprocessing"]["intensity"].pop("region", None)  # CLAHE alone (the ROI scaling: test_roi_scaling.py)
    (dst / "model.json").write_text(json.dumps(cfg))
    return dst


def test_predictor_equalises_the_roi_before_padding_when_the_model_asks(clahe_model, knee_roi):
    roi_dir = default_model_dirs()[0]
    plain_model = load_model(default_model_dirs()[1])
    plain_model.preprocessing.pop("local_contrast", None)
    plain_model.preprocessing["intensity"].pop("region", None)
    plain = KneelPredictor(roi_dir, plain_model, device="cpu")
    clahe = KneelPredictor(roi_dir, clahe_model, device="cpu")
    centre = np.array([(knee_roi.shape[-1] - 1) / 2, (knee_roi.shape[-2] - 1) / 2])
    a = plain._landmark_crops(knee_roi, {"R": centre})[0]
    b = clahe._landmark_crops(knee_roi, {"R": centre})[0]
    expected = plain._pad_crop(LocalContrast(**{k: CLAHE[k] for k in ("tile_mm", "clip_limit")})(
        plain._roi_crop(knee_roi, centre, mirror=False)), plain.landmarks)
    assert torch.allclose(b.as_tensor(), expected.as_tensor(), atol=1e-6)
    assert not torch.allclose(a.as_tensor(), b.as_tensor(), atol=1e-2)


def test_stage_checks_know_local_contrast(clahe_model):
    model = load_model(clahe_model)
    assert stage_of_model(model, "landmarks_cpu_clahe").local_contrast_spec == CLAHE
    with pytest.raises(ValueError, match="local contrast"):
        stage_of_model(model, "landmarks_cpu")
    assert stage_of(clahe_model) == "landmarks_cpu_clahe"
    assert stage_config("landmarks_cpu_clahe").preprocessing["local_contrast"] == CLAHE
    assert "local_contrast" not in stage_config("landmarks_cpu").preprocessing
