"""Test helpers: small synthetic images with known geometry."""

import numpy as np
import torch
from monai.data import MetaTensor


def radiograph(h=300, w=420, spacing=(0.2, 0.15), blobs=()):
    """A (1, H, W) MetaTensor with affine diag(row_spacing, col_spacing) and Gaussian blobs at (x, y) pixels."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w))
    for x, y in blobs:
        img += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 4.0**2))
    affine = torch.diag(torch.tensor([spacing[0], spacing[1], 1.0], dtype=torch.float64))
    return MetaTensor(torch.from_numpy(img).float()[None], affine=affine)


def centroid(img, near_xy, radius):
    """Intensity centroid (x, y) of the blob around ``near_xy`` (within ``radius`` px)."""
    a = np.asarray(img)[0].astype(np.float64)
    ys, xs = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    mask = (xs - near_xy[0]) ** 2 + (ys - near_xy[1]) ** 2 <= radius**2
    wgt = a * mask
    return np.array([(wgt * xs).sum() / wgt.sum(), (wgt * ys).sum() / wgt.sum()])
