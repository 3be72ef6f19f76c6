"""Training augmentations of the KNEEL paper (method.md §4), landmark-aware where they move pixels.

* :class:`RandLandmarkWarpd` — scale, rotation, shear, projective warp and the extra scale,
  composed into one homography and applied in one resampling; the points move by the same
  matrix exactly.
* :class:`RandCutoutd` — zero a square of a fraction of the image side.
* :class:`RandKneelIntensityd` — one of salt-and-pepper, Gaussian blur, median blur, Gaussian
  noise, a combination, or nothing; then gamma.
* :class:`RandTargetJitterd` — uniform ±1 px jitter of the targets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform

from .points import affine_of

__all__ = ["RandLandmarkWarpd", "RandCutoutd", "RandKneelIntensityd", "RandTargetJitterd", "warp_image"]


def _keys(k: KeysCollection) -> list:
    return [k] if isinstance(k, str) else list(k)


def warp_image(image: torch.Tensor, homography_xy: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Warp a ``(C, H, W)`` image by a 3×3 homography acting on ``(x, y, 1)`` pixel positions.

    The output pixel at ``q`` takes the input at ``H⁻¹ q`` (zero outside). Same size as the input.
    """
    c, h, w = image.shape
    inv = torch.linalg.inv(homography_xy.to(torch.float64))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    q = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1) @ inv.T
    src = q[..., :2] / q[..., 2:3]
    grid = torch.stack([2 * src[..., 0] / max(w - 1, 1) - 1, 2 * src[..., 1] / max(h - 1, 1) - 1], dim=-1)
    return F.grid_sample(image[None].float(), grid[None].float(), mode=mode, padding_mode="zeros",
                         align_corners=True)[0]


class RandLandmarkWarpd(RandomizableTransform, MapTransform):
    """Random geometric augmentation of the paper, one homography about the image centre.

    With probability ``prob`` (0.7): scale ``U(scale_range)``, rotation ``U(±rotate_deg)``, shear
    ``U(±shear)`` (with ``shear_prob``), a projective warp whose corner displacement is up to
    ``projective`` of the half-side (with ``projective_prob``), and an extra scale
    ``U(extra_scale_range)`` (with ``extra_scale_prob``). Points in ``point_keys`` are mapped by
    the same homography. When the warp is affine the image's affine is updated so later
    transforms keep points exact; a projective warp is recorded in ``meta["projective_warp"]``.
    """

    def __init__(self, image_key: str = "image", point_keys: KeysCollection = ("landmarks",), prob: float = 0.7,
                 scale_range: Sequence[float] = (0.8, 1.3), rotate_deg: float = 90.0,
                 shear: float = 0.1, shear_prob: float = 0.5, projective: float = 0.1, projective_prob: float = 0.5,
                 extra_scale_range: Sequence[float] = (0.5, 2.5), extra_scale_prob: float = 0.5) -> None:
        MapTransform.__init__(self, [image_key])
        RandomizableTransform.__init__(self, prob)
        self.image_key, self.point_keys = image_key, _keys(point_keys)
        self.scale_range, self.rotate_deg = tuple(scale_range), float(rotate_deg)
        self.shear, self.shear_prob = float(shear), float(shear_prob)
        self.projective, self.projective_prob = float(projective), float(projective_prob)
        self.extra_scale_range, self.extra_scale_prob = tuple(extra_scale_range), float(extra_scale_prob)
        self.homography: torch.Tensor | None = None

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        r = self.R
        s = r.uniform(*self.scale_range)
        if r.uniform() < self.extra_scale_prob:
            s *= r.uniform(*self.extra_scale_range)
        a = math.radians(r.uniform(-self.rotate_deg, self.rotate_deg))
        sh = r.uniform(-self.shear, self.shear) if r.uniform() < self.shear_prob else 0.0
        p = r.uniform(-self.projective, self.projective, size=2) if r.uniform() < self.projective_prob else (0, 0)
        self._params = (s, a, sh, float(p[0]), float(p[1]))

    def matrix(self, height: int, width: int) -> torch.Tensor:
        """The drawn homography in ``(x, y)`` pixels of an image of this size."""
        s, a, sh, px, py = self._params
        cx, cy = (width - 1) / 2, (height - 1) / 2
        centre = torch.tensor([[1, 0, cx], [0, 1, cy], [0, 0, 1]], dtype=torch.float64)
        uncentre = torch.tensor([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=torch.float64)
        scale = torch.diag(torch.tensor([s, s, 1.0], dtype=torch.float64))
        rotate = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]],
                              dtype=torch.float64)
        shear = torch.tensor([[1, sh, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
        # px, py: fraction of the half-side by which the perspective term moves the corners
        persp = torch.tensor([[1, 0, 0], [0, 1, 0], [px / max(cx, 1), py / max(cy, 1), 1]], dtype=torch.float64)
        return centre @ persp @ rotate @ shear @ scale @ uncentre

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            self.homography = None
            return d
        img = d[self.image_key]
        h, w = img.shape[-2:]
        hom = self.matrix(h, w)
        self.homography = hom
        warped = warp_image(img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img), hom)
        if isinstance(img, MetaTensor):
            meta = {k: v for k, v in img.meta.items() if k != "affine"}
            affine = affine_of(img)
            if torch.allclose(hom[2], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)):
                swap = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)  # (x,y) ↔ (row,col)
                affine = affine @ swap @ torch.linalg.inv(hom) @ swap
            else:
                meta["projective_warp"] = True
            warped = MetaTensor(warped, affine=affine, meta=meta)
        d[self.image_key] = warped
        for key in self.point_keys:
            d[key] = _apply_homography(d[key], hom)
        return d


def _apply_homography(points_xy, hom: torch.Tensor):
    is_numpy = isinstance(points_xy, np.ndarray)
    pts = torch.as_tensor(points_xy, dtype=torch.float64)
    ones = torch.ones(*pts.shape[:-1], 1, dtype=torch.float64)
    q = torch.cat([pts, ones], dim=-1) @ hom.T
    out = q[..., :2] / q[..., 2:3]
    return out.numpy() if is_numpy else out.to(torch.as_tensor(points_xy).dtype)


class RandCutoutd(RandomizableTransform, MapTransform):
    """With probability ``prob`` (0.5), zero one square of ``size_fraction`` (10 %) of the image side."""

    def __init__(self, keys: KeysCollection, size_fraction: float = 0.1, prob: float = 0.5,
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0 < size_fraction < 1:
            raise ValueError(f"size_fraction must be in (0, 1), got {size_fraction}")
        self.size_fraction = float(size_fraction)
        self.box: tuple[int, int, int, int] | None = None

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize(None)
        self.box = None
        if not self._do_transform:
            return d
        for i, key in enumerate(self.key_iterator(d)):
            img = d[key]
            h, w = img.shape[-2:]
            side = max(1, round(self.size_fraction * min(h, w)))
            if i == 0:
                self.box = (int(self.R.randint(0, h - side + 1)), int(self.R.randint(0, w - side + 1)), side, side)
            r0, c0, sh, sw = self.box
            out = img.clone()
            out[..., r0 : r0 + sh, c0 : c0 + sw] = 0
            d[key] = out
        return d


class RandKneelIntensityd(RandomizableTransform, MapTransform):
    """The paper's intensity augmentation on images in [0, 1].

    One of: salt-and-pepper (``sp_amount``), Gaussian blur (kernel 3 or 5), median blur
    (kernel 3 or 5), Gaussian noise (``noise_std``), blur + noise, or nothing — uniformly;
    then gamma ``U(gamma_range)`` with ``gamma_prob``. Results are clipped to [0, 1].
    """

    CHOICES = ("salt_pepper", "gaussian_blur", "median_blur", "gaussian_noise", "blur_noise", "none")

    def __init__(self, keys: KeysCollection, prob: float = 1.0, sp_amount: float = 0.01, noise_std: float = 0.03,
                 gamma_range: Sequence[float] = (0.5, 1.5), gamma_prob: float = 0.5,
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.sp_amount, self.noise_std = float(sp_amount), float(noise_std)
        self.gamma_range, self.gamma_prob = tuple(gamma_range), float(gamma_prob)
        self.choice: str = "none"

    def _blur(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8  # OpenCV's default sigma for a kernel size
        t = torch.arange(kernel, dtype=torch.float32) - (kernel - 1) / 2
        g = torch.exp(-(t**2) / (2 * sigma**2))
        g = (g / g.sum()).to(x)
        c = x.shape[0]
        y = F.conv2d(F.pad(x[None], (kernel // 2,) * 4, mode="reflect"), g.view(1, 1, 1, -1).expand(c, 1, 1, -1),
                     groups=c)
        return F.conv2d(y, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]

    @staticmethod
    def _median(x: torch.Tensor, kernel: int) -> torch.Tensor:
        padded = F.pad(x[None], (kernel // 2,) * 4, mode="reflect")
        patches = padded.unfold(2, kernel, 1).unfold(3, kernel, 1)
        return patches.reshape(*patches.shape[:4], -1).median(dim=-1).values[0]

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        r = self.R
        self.choice = self.CHOICES[r.randint(len(self.CHOICES))]
        kernel = int(r.choice([3, 5]))
        gamma = r.uniform(*self.gamma_range) if r.uniform() < self.gamma_prob else None
        seed = int(r.randint(0, 2**31 - 1))
        for key in self.key_iterator(d):
            img = d[key]
            x = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
            x = x.float()
            gen = torch.Generator().manual_seed(seed)
            if self.choice == "salt_pepper":
                u = torch.rand(x.shape, generator=gen)
                x = torch.where(u < self.sp_amount / 2, torch.zeros_like(x), x)
                x = torch.where(u > 1 - self.sp_amount / 2, torch.ones_like(x), x)
            if self.choice in ("gaussian_blur", "blur_noise"):
                x = self._blur(x, kernel)
            if self.choice == "median_blur":
                x = self._median(x, kernel)
            if self.choice in ("gaussian_noise", "blur_noise"):
                x = x + self.noise_std * torch.randn(x.shape, generator=gen)
            x = x.clamp(0, 1)
            if gamma is not None:
                x = x.pow(gamma)
            d[key] = MetaTensor(x, affine=img.affine, meta={k: v for k, v in img.meta.items() if k != "affine"}) \
                if isinstance(img, MetaTensor) else x
        return d


class RandTargetJitterd(RandomizableTransform, MapTransform):
    """Add uniform ``±max_px`` jitter to each coordinate of the targets (the paper found no gain)."""

    def __init__(self, keys: KeysCollection, max_px: float = 1.0, prob: float = 1.0,
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.max_px = float(max_px)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            pts = d[key]
            noise = self.R.uniform(-self.max_px, self.max_px, size=tuple(pts.shape))
            d[key] = pts + (noise if isinstance(pts, np.ndarray) else torch.as_tensor(noise, dtype=pts.dtype))
        return d
