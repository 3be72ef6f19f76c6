"""Differentiable soft-argmax: heat-maps → expected (x, y) in normalised image coordinates."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SoftArgmax2D", "COORDINATE_CONVENTIONS"]

#: ``"pixel_center"``: column i ↦ (i + 0.5) / W, so 0 and 1 are the image's outer edges and a
#: point maps back to pixels as ``x_px = x * W - 0.5`` — unbiased.
#: ``"release"``: column i ↦ i / W as the original release does (a half-pixel bias towards
#: the top-left); needed to reproduce converted release weights exactly.
COORDINATE_CONVENTIONS = ("pixel_center", "release")


class SoftArgmax2D(nn.Module):
    """Spatial softmax over each heat-map, then the expected column and row.

    Shapes: ``(B, M, H, W)`` logits → ``(B, M, 2)`` coordinates ``(x, y)`` in [0, 1].

    Args:
        beta: inverse temperature applied to the logits before the softmax.
        convention: how a pixel index maps to [0, 1]; see :data:`COORDINATE_CONVENTIONS`.
    """

    def __init__(self, beta: float = 1.0, convention: str = "pixel_center") -> None:
        super().__init__()
        if convention not in COORDINATE_CONVENTIONS:
            raise ValueError(f"unknown coordinate convention {convention!r}; choose one of {COORDINATE_CONVENTIONS}")
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.beta = float(beta)
        self.convention = convention

    def grid(self, size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Normalised coordinate of each of ``size`` pixel indices."""
        offset = 0.5 if self.convention == "pixel_center" else 0.0
        return (torch.arange(size, device=device, dtype=dtype) + offset) / size

    def probabilities(self, heatmaps: Tensor) -> Tensor:
        """Per-map spatial softmax, same shape as ``heatmaps`` (each map sums to 1)."""
        b, m, h, w = heatmaps.shape
        return torch.softmax(heatmaps.reshape(b, m, h * w) * self.beta, dim=-1).reshape(b, m, h, w)

    def forward(self, heatmaps: Tensor) -> Tensor:
        if heatmaps.ndim != 4:
            raise ValueError(f"SoftArgmax2D expects (B, M, H, W) heat-maps, got shape {tuple(heatmaps.shape)}")
        h, w = heatmaps.shape[-2:]
        prob = self.probabilities(heatmaps)
        # marginals first: two small dot products instead of two full-size weighted sums
        x = (prob.sum(dim=-2) * self.grid(w, prob.device, prob.dtype)).sum(dim=-1)
        y = (prob.sum(dim=-1) * self.grid(h, prob.device, prob.dtype)).sum(dim=-1)
        return torch.stack([x, y], dim=-1)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, convention={self.convention!r}"
