"""The KNEEL network: entry block → hourglass of depth d → output block → soft-argmax."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import RESIDUAL_BLOCKS, ConvNormAct, residual_block
from .soft_argmax import COORDINATE_CONVENTIONS, SoftArgmax2D

__all__ = ["Hourglass", "KneelHourglassNet", "PRESETS", "build_network", "count_parameters"]

UPSAMPLE_MODES = ("nearest", "bilinear")


class Hourglass(nn.Module):
    """One hourglass level; its ``inner`` is the next level, or a block at the bottom.

    * ``lower``: 2×2 max-pool, then 3 residual blocks ``in → width → width → width``;
    * ``inner``: the next level (``width → out``), or one residual block ``width → out``;
    * ``lower_out``: a residual block ``out → out``;
    * ``upper``: 3 residual blocks ``in → width → width → out`` at the level's own resolution.

    The lower branch is upsampled to the input size and added to the upper branch.

    Shapes: ``(B, in_channels, H, W) → (B, out_channels, H, W)``.

    Args:
        depth: number of levels, >= 1.
        block: residual block of this level (``"hmp"`` or ``"bottleneck"``).
        inner_block: block of the deeper levels (``None``: same as ``block``).
        upsample_mode: ``"nearest"`` (paper) or ``"bilinear"`` (release, ``align_corners=True``).
    """

    def __init__(
        self,
        depth: int,
        in_channels: int,
        width: int,
        out_channels: int,
        block: str = "hmp",
        inner_block: str | None = None,
        upsample_mode: str = "nearest",
        pointwise_kernel_size: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"hourglass depth must be >= 1, got {depth}")
        if upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f"unknown upsample_mode {upsample_mode!r}; choose one of {UPSAMPLE_MODES}")
        self.upsample_mode = upsample_mode
        inner_block = block if inner_block is None else inner_block

        def make(cin: int, cout: int) -> nn.Module:
            return residual_block(block, cin, cout, pointwise_kernel_size, bias)

        self.lower = nn.Sequential(make(in_channels, width), make(width, width), make(width, width))
        if depth > 1:
            self.inner: nn.Module = Hourglass(
                depth - 1, width, width, out_channels, inner_block, inner_block, upsample_mode,
                pointwise_kernel_size, bias,
            )
        else:
            self.inner = make(width, out_channels)
        self.lower_out = make(out_channels, out_channels)
        self.upper = nn.Sequential(make(in_channels, width), make(width, width), make(width, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        low = self.lower_out(self.inner(self.lower(F.max_pool2d(x, 2))))
        align = True if self.upsample_mode == "bilinear" else None
        return self.upper(x) + F.interpolate(low, size=x.shape[-2:], mode=self.upsample_mode, align_corners=align)


class KneelHourglassNet(nn.Module):
    """Hourglass network with soft-argmax regressing ``out_points`` landmarks (Tiulpin et al. 2019).

    * entry: 7×7 conv stride 2 (``in → N``), BN, ReLU, block ``N → 2N``, 2×2 max-pool,
      blocks ``2N → 2N → 2N → 4N`` (the image is now 4× smaller);
    * hourglass of depth ``d``: input ``4N``, inner width ``4N``, output ``8N``;
    * head: Dropout2d, conv-BN-ReLU ``8N → 8N``, Dropout2d, conv-BN-ReLU ``8N → 4N``,
      1×1 conv ``4N → M`` heat-map logits;
    * :class:`SoftArgmax2D` → coordinates.

    Shapes: ``(B, in_channels, H, W)`` → ``(B, M, 2)`` (x, y) in [0, 1] of the input image
    (pixel-centred unless ``coordinate_convention="release"``); heat-maps are
    ``(B, M, ⌊H/4⌋, ⌊W/4⌋)`` (see :meth:`forward_with_heatmaps`). ``H/4`` and ``W/4`` must be
    at least ``2**depth``.

    Args:
        in_channels: 1 (grey) or 3 (the release replicates grey to 3 channels).
        out_points: M, 16 for the landmark model, 1 for the ROI (knee-centre) model.
        width: N, the base width (24 in paper and release).
        depth: d, hourglass depth (paper 6, release 4).
        block: ``"hmp"`` or ``"bottleneck"`` for the entry and outermost hourglass level.
        inner_block: block of the deeper hourglass levels (``None``: same as ``block``).
        upsample_mode: ``"nearest"`` (paper) or ``"bilinear"`` (release).
        pointwise_kernel_size: kernel of the "1×1" convolutions (skip projections, bottleneck
            ends, head mixers): 1 in the paper, 3 in the release.
        bias: conv biases before BN (redundant; the release has them).
        dropout: Dropout2d probability in the head (0.25).
        beta: soft-argmax inverse temperature.
        coordinate_convention: ``"pixel_center"`` or ``"release"`` (see :class:`SoftArgmax2D`).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_points: int = 16,
        width: int = 24,
        depth: int = 6,
        block: str = "hmp",
        inner_block: str | None = None,
        upsample_mode: str = "nearest",
        pointwise_kernel_size: int = 1,
        bias: bool = False,
        dropout: float = 0.25,
        beta: float = 1.0,
        coordinate_convention: str = "pixel_center",
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_points < 1 or width < 2:
            raise ValueError(
                f"need in_channels >= 1, out_points >= 1, width >= 2; got {in_channels}, {out_points}, {width}"
            )
        for name in (block, inner_block if inner_block is not None else block):
            if name not in RESIDUAL_BLOCKS:
                raise ValueError(f"unknown residual block {name!r}; choose one of {sorted(RESIDUAL_BLOCKS)}")
        if coordinate_convention not in COORDINATE_CONVENTIONS:
            raise ValueError(
                f"unknown coordinate_convention {coordinate_convention!r}; choose one of {COORDINATE_CONVENTIONS}"
            )
        self.in_channels, self.out_points, self.depth = in_channels, out_points, depth
        #: the complete constructor arguments: what a model file needs to rebuild this network
        self.hparams = dict(in_channels=in_channels, out_points=out_points, width=width, depth=depth, block=block,
                            inner_block=inner_block, upsample_mode=upsample_mode,
                            pointwise_kernel_size=pointwise_kernel_size, bias=bias, dropout=dropout, beta=beta,
                            coordinate_convention=coordinate_convention)
        n, k = width, pointwise_kernel_size

        def make(cin: int, cout: int) -> nn.Module:
            return residual_block(block, cin, cout, k, bias)

        self.entry = nn.Sequential()
        self.entry.add_module("stem", ConvNormAct(in_channels, n, 7, stride=2, bias=bias))
        self.entry.add_module("res1", make(n, 2 * n))
        self.entry.add_module("pool", nn.MaxPool2d(2))
        self.entry.add_module("res2", make(2 * n, 2 * n))
        self.entry.add_module("res3", make(2 * n, 2 * n))
        self.entry.add_module("res4", make(2 * n, 4 * n))
        self.hourglass = Hourglass(depth, 4 * n, 4 * n, 8 * n, block, inner_block, upsample_mode, k, bias)
        self.head = nn.Sequential()
        self.head.add_module("drop1", nn.Dropout2d(dropout))
        self.head.add_module("mix1", ConvNormAct(8 * n, 8 * n, k, bias=bias))
        self.head.add_module("drop2", nn.Dropout2d(dropout))
        self.head.add_module("mix2", ConvNormAct(8 * n, 4 * n, k, bias=bias))
        self.out_conv = nn.Conv2d(4 * n, out_points, kernel_size=1)
        self.soft_argmax = SoftArgmax2D(beta, coordinate_convention)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects (B, {self.in_channels}, H, W) input, got shape {tuple(x.shape)}"
            )
        smallest = min(x.shape[-2:]) // 4
        if smallest < 2**self.depth:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} is too small for hourglass depth {self.depth}: "
                f"H/4 and W/4 must be >= {2 ** self.depth}"
            )

    def forward_heatmaps(self, x: Tensor) -> Tensor:
        """Heat-map logits ``(B, M, ⌊H/4⌋, ⌊W/4⌋)`` before the soft-argmax."""
        self._check_input(x)
        return self.out_conv(self.head(self.hourglass(self.entry(x))))

    def forward_with_heatmaps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(coordinates (B, M, 2), heat-map logits (B, M, h, w))``."""
        heatmaps = self.forward_heatmaps(x)
        return self.soft_argmax(heatmaps), heatmaps

    def forward(self, x: Tensor) -> Tensor:
        return self.soft_argmax(self.forward_heatmaps(x))


#: Named configurations. ``paper``: the ICCV-W 2019 paper (N 24, d 6). ``release``: the public
#: release as docs/method.md §3 describes it (d 4, bilinear upsampling, 3×3 "1×1" convs with biases,
#: 3 input channels, i/W coordinates, HMP at the outer level, bottleneck blocks below).
#: Snapshots whose inner levels are HMP too are detected by the release converter.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(in_channels=1, width=24, depth=6, block="hmp", inner_block=None, upsample_mode="nearest",
                  pointwise_kernel_size=1, bias=False, coordinate_convention="pixel_center"),
    "release": dict(in_channels=3, width=24, depth=4, block="hmp", inner_block="bottleneck",
                    upsample_mode="bilinear", pointwise_kernel_size=3, bias=True, coordinate_convention="release"),
}


def build_network(preset: str = "paper", out_points: int = 16, **overrides: Any) -> KneelHourglassNet:
    """Build a :class:`KneelHourglassNet` from a named preset, with keyword overrides.

    Usable from a bundle config: ``{"_target_": "kneel_monai.networks.build_network",
    "preset": "paper", "out_points": 16}``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; choose one of {sorted(PRESETS)}")
    args = {**PRESETS[preset], **overrides}
    return KneelHourglassNet(out_points=out_points, **args)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)

