import pytest
import torch
from torch import nn

from kneel_monai.losses import WingLoss
from kneel_monai.transforms import MixupBatch, mixup_loss


class CountingNet(nn.Module):
    """A real (tiny) network that counts its forward passes."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(12, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return torch.sigmoid(self.linear(x.flatten(1))).reshape(-1, 2, 2)


def test_mixup_batch_is_a_convex_mix_with_a_permutation():
    x = torch.randn(6, 1, 3, 4)
    mixed, lam, perm = MixupBatch(0.75)(x, torch.Generator().manual_seed(0))
    assert 0 < lam < 1
    assert sorted(perm.tolist()) == list(range(6))
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[perm])
    # reproducible for a seeded generator, and λ follows Beta(0.75, 0.75): mean 0.5, var 1/10
    again = MixupBatch(0.75)(x, torch.Generator().manual_seed(0))
    assert again[1] == lam and torch.equal(again[2], perm)
    g = torch.Generator().manual_seed(1)
    lams = torch.tensor([MixupBatch(0.75)(x, g)[1] for _ in range(4000)])
    assert abs(lams.mean() - 0.5) < 0.02 and abs(lams.var() - 0.1) < 0.01


def test_mixup_loss_two_passes_targets_not_mixed():
    torch.manual_seed(0)
    net, loss_fn = CountingNet(), WingLoss()
    x, y = torch.randn(5, 1, 3, 4), torch.rand(5, 2, 2)
    loss, pred = mixup_loss(net, loss_fn, x, y, alpha=0.75, generator=torch.Generator().manual_seed(3))
    assert net.calls == 2
    mixed, lam, perm = MixupBatch(0.75)(x, torch.Generator().manual_seed(3))
    expected = lam * loss_fn(net(x), y) + (1 - lam) * loss_fn(net(mixed), y[perm])
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(pred, net(x))
    loss.backward()
    assert net.linear.weight.grad is not None


def test_mixup_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        MixupBatch()(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="alpha"):
        MixupBatch(0.0)
