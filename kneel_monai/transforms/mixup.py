"""Mixup as the KNEEL paper uses it: a batch operation with two forward passes and unmixed targets."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["MixupBatch", "mixup_loss"]


class MixupBatch:
    """Mix a batch with a shuffled copy of itself: ``x′ = λ·x + (1 − λ)·x[perm]``, ``λ ~ Beta(α, α)``.

    One ``λ`` per batch (as in the release). Returns ``(x′, λ, perm)``; targets are not mixed.
    """

    def __init__(self, alpha: float = 0.75) -> None:
        if not alpha > 0:
            raise ValueError(f"mixup alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, float, Tensor]:
        if images.ndim < 2 or images.shape[0] < 2:
            raise ValueError(f"mixup needs a batch of at least 2 images, got shape {tuple(images.shape)}")
        # Beta(a, a) from two Gammas, so that a torch.Generator makes it reproducible
        g1 = torch._standard_gamma(torch.full((1,), self.alpha, dtype=torch.float64), generator=generator)
        g2 = torch._standard_gamma(torch.full((1,), self.alpha, dtype=torch.float64), generator=generator)
        lam = float(g1 / (g1 + g2))
        perm = torch.randperm(images.shape[0], generator=generator).to(images.device)
        return lam * images + (1 - lam) * images[perm], lam, perm


def mixup_loss(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    images: Tensor,
    targets: Tensor,
    alpha: float = 0.75,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The paper's mixup objective: ``λ·L(p₁, f(x₁)) + (1 − λ)·L(p₂, f(x′))`` with ``p₂ = p₁[perm]``.

    Two forward passes (the clean batch and the mixed one); the targets are not mixed.
    Returns ``(loss, predictions on the clean batch)``.
    """
    mixed, lam, perm = MixupBatch(alpha)(images, generator)
    clean_pred = model(images)
    mixed_pred = model(mixed)
    loss = lam * loss_fn(clean_pred, targets) + (1 - lam) * loss_fn(mixed_pred, targets[perm])
    return loss, clean_pred
