"""The network-output → radiograph-pixel chain of both stages, exactly.

A stand-in network answers a known sub-pixel point of its input; the predictor must map it to the
radiograph pixel that the geometry implies, worked out here independently of the affines: the ROI is
``n = round(140 / 0.6)`` pixels centred on the start point (``(n − 1)/2`` on it), columns reversed for a left
knee, ``0.6 mm`` per ROI pixel against the radiograph's own (anisotropic) spacing; MONAI's symmetric pad puts
``(pad − n) // 2`` pixels before, its centre crop starts at ``pad // 2 − crop // 2``; a pixel-centred network
means ``x_px = x · W − 0.5``, the release's ``i / W`` convention ``x_px = x · W``. Both sides, both
conventions, the shipped model's geometry and a release-converted model's (its mean/std input path).
Stage 1 likewise: the radiograph resampled to ``round(size · spacing / 4 mm)`` pixels (output pixel ``i`` samples
input ``(i + 0.5) · scale − 0.5``), split at ``width // 2``, each half padded and centre-cropped.
"""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from kneel_monai.inference import KneelPredictor, default_model_dirs
from kneel_monai.model_io import KneelModel, load_model
from kneel_monai.networks.soft_argmax import SoftArgmax2D
from kneel_monai.release import convert_release

ROW_MM, COL_MM = 0.15, 0.2  # anisotropic: a mixed-up axis shows
#: network-input pixels (x, y) the stand-in answers, one per landmark; sub-pixel on purpose
ANSWER_PX = np.stack([np.linspace(20.25, 190.75, 16), np.linspace(150.5, 60.125, 16)], axis=1)


class FixedAnswer(nn.Module):
    """Answers ``answer_px`` (pixels of a 224 px input, scaled to its input size) in normalised coordinates of
    ``convention``; records what it was given."""

    def __init__(self, convention: str, in_channels: int = 1, answer_px: np.ndarray = ANSWER_PX) -> None:
        super().__init__()
        self.soft_argmax = SoftArgmax2D(convention=convention)
        self.answer_px = answer_px
        self.in_channels, self.out_points, self.seen = in_channels, len(answer_px), []

    def forward_with_heatmaps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append(x.detach().clone())
        h, w = x.shape[-2:]
        offset = 0.5 if self.soft_argmax.convention == "pixel_center" else 0.0
        answer = (torch.as_tensor(self.answer_px * w / 224, dtype=torch.float32) + offset) / torch.tensor([w, h])
        heatmaps = torch.zeros(x.shape[0], self.out_points, h // 4, w // 4)
        return answer.expand(x.shape[0], self.out_points, 2), heatmaps


def expected_px(centre: np.ndarray, side: str, pre: dict, width: int) -> np.ndarray:
    """Where ``ANSWER_PX`` of the network input lies in the radiograph, from the geometry alone."""
    spacing = float(pre["spacing_mm"])
    n = int(round(float(pre.get("roi_size_mm", 140.0)) / spacing))
    shift = (pre["pad_size"] - n) // 2 - (pre["pad_size"] // 2 - pre["crop_size"] // 2)  # ROI px = crop px − shift
    roi = ANSWER_PX * width / 224 - shift - (n - 1) / 2  # from the ROI's centre, in ROI pixels
    sign = -1.0 if side == "L" else 1.0
    return centre + np.stack([sign * roi[:, 0] * spacing / COL_MM, roi[:, 1] * spacing / ROW_MM], axis=1)


def radiograph() -> MetaTensor:
    rng = np.random.default_rng(0)
    pixels = torch.as_tensor(rng.uniform(0, 1, size=(1, 1400, 1900)), dtype=torch.float32)
    return MetaTensor(pixels, affine=torch.diag(torch.tensor([ROW_MM, COL_MM, 1.0], dtype=torch.float64)))


def predictor_with(landmark_model: KneelModel) -> KneelPredictor:
    return KneelPredictor(default_model_dirs()[0], landmark_model, device="cpu", fast=False, refine=False)


@pytest.mark.parametrize("convention", ["pixel_center", "release"])
def test_stage2_maps_the_network_answer_to_the_exact_radiograph_pixel(convention):
    shipped = load_model(default_model_dirs()[1])
    net = FixedAnswer(convention)
    model = KneelModel("landmarks", [net], shipped.config, preprocessing=shipped.preprocessing)
    predictor = predictor_with(model)
    centres = {"R": np.array([512.375, 700.625]), "L": np.array([1391.5, 688.25])}
    got = predictor.knee_landmarks(predictor._normalise(radiograph()), centres)
    assert net.seen[0].shape == (2, 1, 224, 224)
    for side, centre in centres.items():
        np.testing.assert_allclose(got[side][0], expected_px(centre, side, shipped.preprocessing, 224), atol=1e-6)


def test_a_release_converted_model_decodes_with_its_own_convention_and_input(release_fixture_dir, tmp_path):
    """The converted release model through KneelPredictor: i/W coordinates (no half-pixel term), its own
    crop geometry, and the release's input (0-255, grey replicated to its channels, mean/std standardised)."""
    out = {p.name: p for p in convert_release(release_fixture_dir, tmp_path / "converted")}
    converted = load_model(out["hc"] if "hc" in out else next(p for p in out.values() if "hc" in p.name))
    assert converted.pixel_offset == 0.0 and converted.preprocessing["intensity"]["kind"] == "release_mean_std"
    channels = converted.networks[0].in_channels
    net = FixedAnswer("release", in_channels=channels)
    model = KneelModel("landmarks", [net], converted.config, preprocessing=converted.preprocessing)
    predictor = predictor_with(model)
    pre, centre = converted.preprocessing, np.array([900.25, 640.75])
    norm = predictor._normalise(radiograph())
    got = predictor.knee_landmarks(norm, {"L": centre})["L"][0]
    crop = int(pre["crop_size"])
    np.testing.assert_allclose(got, expected_px(centre, "L", pre, crop), atol=1e-6)
    given = net.seen[0]
    assert given.shape == (1, channels, crop, crop)
    plain = predictor._landmark_crops(norm, [("L", centre)])[0].as_tensor()[0]
    mean, std = pre["intensity"]["mean"][:channels], pre["intensity"]["std"][:channels]
    for c in range(channels):
        torch.testing.assert_close(given[0, c], (plain * 255 - mean[c]) / std[c])


def test_stage1_maps_the_network_answer_to_the_exact_radiograph_pixel():
    shipped = load_model(default_model_dirs()[0])
    answer = np.array([[50.25 * 224 / 112, 60.75 * 224 / 112]])  # (50.25, 60.75) of the 112 px input
    net = FixedAnswer("pixel_center", answer_px=answer)
    model = KneelModel("roi", [net], shipped.config, preprocessing=shipped.preprocessing)
    predictor = KneelPredictor(model, default_model_dirs()[1], device="cpu", fast=False)
    image = radiograph()
    centres, _ = predictor.knee_centres(predictor._normalise(image))
    h, w = image.shape[-2:]
    pre, spacing = shipped.preprocessing, float(shipped.preprocessing["spacing_mm"])
    out_h, out_w = round(h * ROW_MM / spacing), round(w * COL_MM / spacing)
    mid = out_w // 2
    for side, first_column, half_w in (("R", 0, mid), ("L", mid, out_w - mid)):
        starts = []
        for size in (half_w, out_h):  # columns, rows of the half
            padded = max(size, pre["pad_size"])
            starts.append(padded // 2 - pre["crop_size"] // 2 - (padded - size) // 2)
        col = 50.25 + starts[0] + first_column
        row = 60.75 + starts[1]
        expected = [(col + 0.5) * w / out_w - 0.5, (row + 0.5) * h / out_h - 0.5]
        np.testing.assert_allclose(centres[side], expected, atol=1e-6)
