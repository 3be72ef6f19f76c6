"""The KNEEL network: shapes, parameter counts derived from docs/method.md §3, soft-argmax, bad input."""

import math

import pytest
import torch

from kneel_monai.networks import (
    BottleneckBlock,
    HMPBlock,
    KneelHourglassNet,
    SoftArgmax2D,
    build_network,
    count_parameters,
)


# ---- independent parameter count, written from method.md §3 (not from the module tree) ----
def conv(cin, cout, k, bias):
    return k * k * cin * cout + (cout if bias else 0)


def bn(c):
    return 2 * c


def hmp(cin, n, k, bias):
    a, b = n // 2, n // 4
    c = n - a - b
    total = conv(cin, a, 3, bias) + bn(a) + conv(a, b, 3, bias) + bn(b) + conv(b, c, 3, bias) + bn(c)
    return total + (conv(cin, n, k, bias) + bn(n) if cin != n else 0)


def bottleneck(cin, n, k, bias):
    h = n // 2
    total = conv(cin, h, k, bias) + bn(h) + conv(h, h, 3, bias) + bn(h) + conv(h, n, k, bias) + bn(n)
    return total + (conv(cin, n, k, bias) + bn(n) if cin != n else 0)


def expected_parameters(in_ch, m, n, d, block, inner, k, bias):
    blocks = {"hmp": hmp, "bottleneck": bottleneck}

    def level(depth, cin, width, cout, blk):
        b = blocks[blk]
        total = b(cin, width, k, bias) + 2 * b(width, width, k, bias)  # lower branch
        total += level(depth - 1, width, width, cout, inner) if depth > 1 else b(width, cout, k, bias)
        total += b(cout, cout, k, bias)
        total += b(cin, width, k, bias) + b(width, width, k, bias) + b(width, cout, k, bias)  # upper branch
        return total

    b = blocks[block]
    entry = conv(in_ch, n, 7, bias) + bn(n) + b(n, 2 * n, k, bias) + 2 * b(2 * n, 2 * n, k, bias)
    entry += b(2 * n, 4 * n, k, bias)
    head = conv(8 * n, 8 * n, k, bias) + bn(8 * n) + conv(8 * n, 4 * n, k, bias) + bn(4 * n)
    head += conv(4 * n, m, 1, True)
    return entry + level(d, 4 * n, 4 * n, 8 * n, block) + head


@pytest.mark.parametrize("preset,in_ch,d,inner,k,bias", [
    ("paper", 1, 6, "hmp", 1, False),
    ("release", 3, 4, "bottleneck", 3, True),
])
@pytest.mark.parametrize("points", [16, 1])
def test_presets_shapes_and_parameter_counts(preset, in_ch, d, inner, k, bias, points):
    net = build_network(preset, out_points=points).eval()
    assert count_parameters(net) == expected_parameters(in_ch, points, 24, d, "hmp", inner, k, bias)
    x = torch.randn(2, in_ch, 450, 450)
    with torch.no_grad():
        coords, heatmaps = net.forward_with_heatmaps(x)
    assert coords.shape == (2, points, 2)
    assert heatmaps.shape == (2, points, 112, 112)
    assert torch.all((coords >= 0) & (coords <= 1))


def test_release_parameter_count_matches_release_snapshot(release_fixture_dir):
    # the fixture's HMP-everywhere snapshot has exactly the parameters of our network built that way
    sd = torch.load(release_fixture_dir / "hc" / "fold_0_2019_07_14_snapshot.pth", weights_only=True)["model"]
    release_params = sum(v.numel() for key, v in sd.items() if not key.endswith(("running_mean", "running_var",
                                                                                  "num_batches_tracked")))
    # the release preset at the fixture's width (8; the release's own models have 24)
    net = build_network("release", out_points=16, inner_block="hmp", width=8)
    assert count_parameters(net) == release_params
    assert count_parameters(build_network("release", out_points=16, inner_block="hmp")) > release_params


def test_bottleneck_network_and_256_input():
    net = KneelHourglassNet(in_channels=1, out_points=16, width=8, depth=4, block="bottleneck").eval()
    assert count_parameters(net) == expected_parameters(1, 16, 8, 4, "bottleneck", "bottleneck", 1, False)
    with torch.no_grad():
        assert net(torch.randn(1, 1, 256, 256)).shape == (1, 16, 2)


def test_blocks_shapes_and_split():
    x = torch.randn(2, 10, 9, 11)
    block = HMPBlock(10, 22)
    assert block(x).shape == (2, 22, 9, 11)
    assert [block.scale1.conv.out_channels, block.scale2.conv.out_channels, block.scale3.conv.out_channels] == [11, 5,
                                                                                                                6]
    assert isinstance(HMPBlock(8, 8).skip, torch.nn.Identity)
    assert BottleneckBlock(10, 22, pointwise_kernel_size=3)(x).shape == (2, 22, 9, 11)


def test_upsampling_modes_differ():
    torch.manual_seed(0)
    a = KneelHourglassNet(width=8, depth=2, upsample_mode="nearest").eval()
    b = KneelHourglassNet(width=8, depth=2, upsample_mode="bilinear").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))


@pytest.mark.parametrize("convention,offset", [("pixel_center", 0.5), ("release", 0.0)])
def test_soft_argmax_recovers_sharp_peak(convention, offset):
    h, w = 40, 50
    hm = torch.full((1, 2, h, w), -1e4)
    hm[0, 0, 7, 31] = 0.0
    hm[0, 1, 0, 0] = 0.0
    xy = SoftArgmax2D(convention=convention)(hm)
    torch.testing.assert_close(xy[0, 0], torch.tensor([(31 + offset) / w, (7 + offset) / h]))
    torch.testing.assert_close(xy[0, 1], torch.tensor([offset / w, offset / h]))


@pytest.mark.parametrize("convention,offset", [("pixel_center", 0.5), ("release", 0.0)])
def test_soft_argmax_subpixel_gaussian(convention, offset):
    h, w = 64, 80
    cx, cy = 23.37, 41.81  # sub-pixel centre, in pixel indices
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    logits = -((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 1.5**2)
    xy = SoftArgmax2D(convention=convention)(logits[None, None])[0, 0]
    px = xy * torch.tensor([w, h], dtype=torch.float64) - offset
    assert torch.allclose(px, torch.tensor([cx, cy], dtype=torch.float64), atol=1e-6)


def test_soft_argmax_beta_sharpens():
    hm = torch.zeros(1, 1, 8, 8)
    hm[0, 0, 1, 6] = 2.0
    soft = SoftArgmax2D(beta=1.0)(hm)[0, 0]
    sharp = SoftArgmax2D(beta=20.0)(hm)[0, 0]
    target = torch.tensor([6.5 / 8, 1.5 / 8])
    assert (sharp - target).abs().max() < 1e-6 < (soft - target).abs().max()


@pytest.mark.parametrize("kwargs,match", [
    (dict(block="resnet"), "unknown residual block"),
    (dict(inner_block="dense"), "unknown residual block"),
    (dict(upsample_mode="cubic"), "upsample_mode"),
    (dict(coordinate_convention="corner"), "coordinate_convention"),
    (dict(depth=0), "depth must be >= 1"),
])
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KneelHourglassNet(**kwargs)


def test_bad_preset_and_inputs():
    with pytest.raises(ValueError, match="unknown network preset"):
        build_network("huge")
    net = KneelHourglassNet(in_channels=1, width=8, depth=3)
    with pytest.raises(ValueError, match=r"expects \(B, 1, H, W\).*\(1, 3, 64, 64\)"):
        net(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="expects"):
        net(torch.zeros(64, 64))
    with pytest.raises(ValueError, match="too small for hourglass depth 3"):
        net(torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\(B, M, H, W\)"):
        SoftArgmax2D()(torch.zeros(3, 4, 5))


def test_gradients_flow_to_every_parameter():
    net = KneelHourglassNet(width=8, depth=2, dropout=0.0)
    net(torch.randn(2, 1, 64, 64)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert math.isfinite(sum(float(p.grad.abs().sum()) for p in net.parameters()))


def test_fused_and_channels_last_network_equals_eager():
    from kneel_monai.networks import fuse_conv_bn, prepare_for_inference

    torch.manual_seed(1)
    net = build_network("release", out_points=16, width=8, depth=3)
    # non-trivial BatchNorm statistics, as a trained network has
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, 3, 96, 96) * 3 + 1)
    net.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected, expected_hm = net.forward_with_heatmaps(x)
        fused = fuse_conv_bn(net)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        got, got_hm = fused.forward_with_heatmaps(x)
        fast = prepare_for_inference(net)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got_hm, expected_hm, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=0)
    # the original is untouched (still has its BatchNorms)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_hparams_rebuild_the_same_network():
    net = build_network("release", out_points=1, width=8, depth=2)
    again = KneelHourglassNet(**net.hparams)
    again.load_state_dict(net.state_dict())
    assert net.hparams["inner_block"] == "bottleneck" and net.hparams["out_points"] == 1
    assert count_parameters(again) == count_parameters(net)
