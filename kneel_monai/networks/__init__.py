"""Networks: the KNEEL hourglass, its blocks and the soft-argmax."""

from .blocks import BottleneckBlock, ConvNormAct, HMPBlock, residual_block
from .fusion import fuse_conv_bn, prepare_for_inference
from .hourglass import PRESETS, Hourglass, KneelHourglassNet, build_network, count_parameters
from .soft_argmax import COORDINATE_CONVENTIONS, SoftArgmax2D

__all__ = [
    "BottleneckBlock",
    "ConvNormAct",
    "HMPBlock",
    "residual_block",
    "PRESETS",
    "Hourglass",
    "KneelHourglassNet",
    "build_network",
    "count_parameters",
    "COORDINATE_CONVENTIONS",
    "SoftArgmax2D",
    "fuse_conv_bn",
    "prepare_for_inference",
]
