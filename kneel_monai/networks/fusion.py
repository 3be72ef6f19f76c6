"""Inference-time speed-ups that keep the network's outputs: conv-BN folding, channels-last."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .blocks import ConvNormAct

__all__ = ["fuse_conv_bn", "prepare_for_inference"]


def fuse_conv_bn(network: nn.Module) -> nn.Module:
    """A copy of ``network`` (in eval mode) with each :class:`ConvNormAct`'s BatchNorm folded into its conv.

    Outputs equal the eval-mode original up to float rounding; the copy cannot be trained
    (the BatchNorm statistics are baked into the weights).
    """
    fused = copy.deepcopy(network).eval()
    for module in fused.modules():
        if isinstance(module, ConvNormAct) and isinstance(module.norm, nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.norm)
            module.norm = nn.Identity()
    return fused


def prepare_for_inference(network: nn.Module, fuse: bool = True, channels_last: bool = True) -> nn.Module:
    """The fastest eager form measured on CPU (see ``benchmarks/bench_network.py``): folded conv-BN and
    channels-last weights. Feed it inputs with ``x.contiguous(memory_format=torch.channels_last)``
    or plain NCHW tensors (converted by the first conv)."""
    net = fuse_conv_bn(network) if fuse else copy.deepcopy(network).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net
