"""The network + soft-argmax + wing loss actually learn: a tiny model overfits 8 images to < 1 px in 150 steps."""

import torch

from kneel_monai.losses import WingLoss
from kneel_monai.networks import KneelHourglassNet


def blob_images(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with one bright Gaussian blob each, and its centre (pixel-centred normalised x, y)."""
    g = torch.Generator().manual_seed(seed)
    centres = 12 + torch.rand(n, 2, generator=g) * (size - 24)  # pixel indices (x, y)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    d2 = (xs[None] - centres[:, 0, None, None]) ** 2 + (ys[None] - centres[:, 1, None, None]) ** 2
    images = torch.exp(-d2 / (2 * 3.0**2)) + 0.05 * torch.randn(n, size, size, generator=g)
    return images[:, None], ((centres + 0.5) / size)[:, None, :]


def test_tiny_network_overfits_eight_images():
    torch.manual_seed(0)
    size = 64
    images, targets = blob_images(8, size, seed=1)
    net = KneelHourglassNet(in_channels=1, out_points=1, width=8, depth=2, dropout=0.0)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = WingLoss()
    net.train()
    for _ in range(150):
        optimiser.zero_grad()
        loss = loss_fn(net(images), targets)
        loss.backward()
        optimiser.step()
    net.eval()  # BatchNorm running statistics must have converged too
    with torch.no_grad():
        errors_px = ((net(images) - targets) * size).norm(dim=-1)
    assert errors_px.max() < 1.0, f"max error {errors_px.max():.2f} px after 150 steps"
    # and it is not a constant guess: the spread of the targets is tens of pixels
    assert (targets * size).std(dim=0).min() > 5
