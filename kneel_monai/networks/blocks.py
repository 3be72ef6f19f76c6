"""Building blocks of the KNEEL hourglass: conv-norm-act, HMP and bottleneck residual blocks."""

from __future__ import annotations

from torch import Tensor, cat, nn

__all__ = ["ConvNormAct", "HMPBlock", "BottleneckBlock", "RESIDUAL_BLOCKS", "residual_block"]


class ConvNormAct(nn.Sequential):
    """``Conv2d`` → ``BatchNorm2d`` → optional ``ReLU``, children named ``conv``, ``norm``, ``act``.

    Odd kernels are padded to keep the spatial size ("same" convolution, stride 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        act: bool = True,
        bias: bool = False,
    ) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvNormAct needs an odd kernel_size, got {kernel_size}")
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias
        )
        self.norm = nn.BatchNorm2d(out_channels)
        if act:
            self.act = nn.ReLU(inplace=True)


class _Residual(nn.Module):
    """Common skip path: identity when the width is kept, else a projection (conv + BN)."""

    def __init__(self, in_channels: int, out_channels: int, pointwise_kernel_size: int, bias: bool) -> None:
        super().__init__()
        if in_channels == out_channels:
            self.skip: nn.Module = nn.Identity()
        else:
            self.skip = ConvNormAct(in_channels, out_channels, pointwise_kernel_size, act=False, bias=bias)


class HMPBlock(_Residual):
    """Hierarchical, multi-scale and parallel residual block (Bulat & Tzimiropoulos, ICCV 2017).

    Three 3×3 conv-BN(-ReLU) in series with ``n/2``, ``n/4`` and ``n - n/2 - n/4`` output
    channels (the last without ReLU); their outputs are concatenated to ``n`` channels — the
    receptive fields 3, 5, 7 side by side — and added to the skip path.

    Shapes: ``(B, in_channels, H, W) → (B, out_channels, H, W)``.

    Args:
        pointwise_kernel_size: kernel of the skip projection; 1 in the paper, 3 in the
            original release (its "1×1" blocks are 3×3 with padding 1).
    """

    def __init__(
        self, in_channels: int, out_channels: int, pointwise_kernel_size: int = 1, bias: bool = False
    ) -> None:
        if out_channels < 4:
            raise ValueError(f"HMPBlock needs out_channels >= 4 to split into n/2, n/4, rest; got {out_channels}")
        super().__init__(in_channels, out_channels, pointwise_kernel_size, bias)
        half, quarter = out_channels // 2, out_channels // 4
        self.scale1 = ConvNormAct(in_channels, half, 3, bias=bias)
        self.scale2 = ConvNormAct(half, quarter, 3, bias=bias)
        self.scale3 = ConvNormAct(quarter, out_channels - half - quarter, 3, act=False, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        o1 = self.scale1(x)
        o2 = self.scale2(o1)
        o3 = self.scale3(o2)
        return cat([o1, o2, o3], dim=1) + self.skip(x)


class BottleneckBlock(_Residual):
    """Bottleneck residual block: 1×1 (n/2) → 3×3 (n/2) → 1×1 (n, no ReLU), plus the skip.

    The paper's alternative to :class:`HMPBlock`. Shapes as :class:`HMPBlock`.
    """

    def __init__(
        self, in_channels: int, out_channels: int, pointwise_kernel_size: int = 1, bias: bool = False
    ) -> None:
        if out_channels < 2:
            raise ValueError(f"BottleneckBlock needs out_channels >= 2, got {out_channels}")
        super().__init__(in_channels, out_channels, pointwise_kernel_size, bias)
        mid = out_channels // 2
        self.reduce = ConvNormAct(in_channels, mid, pointwise_kernel_size, bias=bias)
        self.conv = ConvNormAct(mid, mid, 3, bias=bias)
        self.expand = ConvNormAct(mid, out_channels, pointwise_kernel_size, act=False, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.expand(self.conv(self.reduce(x))) + self.skip(x)


RESIDUAL_BLOCKS: dict[str, type[_Residual]] = {"hmp": HMPBlock, "bottleneck": BottleneckBlock}


def residual_block(
    name: str, in_channels: int, out_channels: int, pointwise_kernel_size: int = 1, bias: bool = False
) -> nn.Module:
    """Build a residual block by name: ``"hmp"`` or ``"bottleneck"``."""
    try:
        block_type = RESIDUAL_BLOCKS[name]
    except KeyError:
        raise ValueError(f"unknown residual block {name!r}; choose one of {sorted(RESIDUAL_BLOCKS)}") from None
    return block_type(in_channels, out_channels, pointwise_kernel_size=pointwise_kernel_size, bias=bias)
