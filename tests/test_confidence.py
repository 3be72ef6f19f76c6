"""``heatmap_confidence``: the softmax mass within one heat-map pixel of the predicted point, computed by hand."""

import pytest
import torch

from kneel_monai.inference import heatmap_confidence

H, W = 8, 10


def at(x_px: float, y_px: float) -> torch.Tensor:
    """Normalised pixel-centred coordinates of heat-map pixel (x, y), shape (1, 1, 2)."""
    return torch.tensor([[[(x_px + 0.5) / W, (y_px + 0.5) / H]]])


def test_a_flat_map_gives_the_window_share_of_the_pixels():
    flat = torch.zeros(1, 1, H, W)
    assert heatmap_confidence(flat, at(4, 3)).item() == pytest.approx(9 / (H * W))
    assert heatmap_confidence(flat, at(0, 0)).item() == pytest.approx(4 / (H * W))  # the window stops at the edge


def test_a_sharp_peak_under_the_point_is_near_one_and_elsewhere_near_zero():
    peak = torch.full((1, 1, H, W), -20.0)
    peak[0, 0, 3, 4] = 20.0
    assert heatmap_confidence(peak, at(4, 3)).item() > 0.999
    assert heatmap_confidence(peak, at(5, 4)).item() > 0.999  # one pixel off: still in the 3x3 window
    assert heatmap_confidence(peak, at(7, 3)).item() < 1e-6  # three pixels off: outside it


def test_the_mass_is_exact_for_two_peaks_and_beta_sharpens():
    logits = torch.zeros(1, 2, H, W)
    logits[0, :, 3, 4] = 2.0
    logits[0, :, 6, 8] = 2.0
    e2 = torch.exp(torch.tensor(2.0)).item()
    total = 2 * e2 + (H * W - 2)
    coords = torch.cat([at(4, 3), at(8, 6)], dim=1)
    got = heatmap_confidence(logits, coords)
    assert got[0, 0].item() == pytest.approx((e2 + 8) / total, rel=1e-5)
    assert got[0, 1].item() == pytest.approx((e2 + 8) / total, rel=1e-5)
    e4 = torch.exp(torch.tensor(4.0)).item()
    sharper = heatmap_confidence(logits, coords, beta=2.0)[0, 0].item()
    assert sharper == pytest.approx((e4 + 8) / (2 * e4 + H * W - 2), rel=1e-5) and sharper > got[0, 0].item()
