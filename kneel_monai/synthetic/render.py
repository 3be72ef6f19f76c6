"""Render a bilateral PA knee radiograph from knee anatomies: projection, processing, detector.

Image conventions: arrays ``(H, W)`` (rows, columns); a point ``(x, y)`` in pixels is
``(column, row)`` with pixel *centres* at integer coordinates, and its position in mm is
``(x · col_spacing, y · row_spacing)``. Output intensities are display values in [0, 1]
(bone bright, air dark).

How it works (one call of :func:`render_radiograph`):

1. **Projection at low resolution** (≈0.3 mm): for each bone, the signed distance ``d`` to its
   outline (exact near the outline, a Euclidean distance transform deeper inside) and the
   bone's fields give the path lengths through cortical shell and inner (trabecular or marrow)
   bone: ``T_out = D·p(d/R)``, ``T_in = (D − 2c)·p((d − c)/(R − c))`` with the elliptical profile
   ``p(t) = sqrt(t(2 − t))``; the line integral adds ``μ_cort (T_out − T_in) + μ_in T_in``.
   The legs' soft tissue is two nested elliptical cylinders (subcutaneous fat, muscle).
   The result is the log-attenuation ``L`` per pixel.
2. **Processing** like a DR/CR workstation: unsharp-mask edge enhancement and large-scale
   range compression, then the display curve (window, gamma, S-curve). Its slope is kept so
   that full-resolution detail can be added linearly.
3. **Full resolution**: the low-resolution display image, the noise gain, the texture gain and
   the collimation field are upsampled bilinearly (the landmarks' sub-pixel positions are kept:
   the low-resolution grid is defined in full-resolution pixel coordinates); trabecular texture
   (a ridge network of band-pass noise plus vertical streaks, made by FFT filtering in each knee's
   box) and quantum-like noise (stronger where attenuation is high), blurred by the detector's
   point-spread function, are added; then collimation, the side marker and clipping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import cKDTree

from .anatomy import MU_CORTICAL, MU_FAT, MU_MUSCLE, MU_TRABECULAR, Bone, KneeAnatomy

__all__ = ["KneePose", "RenderSettings", "render_radiograph", "low_res_shape"]

_TARGET_LOW_RES_MM = 0.3


@dataclass(frozen=True)
class KneePose:
    """Where a knee's local frame sits in the image: landmark 4 at ``centre_mm`` (x, y) in image mm,
    rotated by ``angle_rad`` (image axes, y down), ``mirror`` = −1 for a left knee (local x → −x)."""

    centre_mm: tuple[float, float]
    angle_rad: float
    mirror: int

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        p = np.asarray(pts, dtype=np.float64)
        x = p[..., 0] * self.mirror
        y = p[..., 1]
        c, s = np.cos(self.angle_rad), np.sin(self.angle_rad)
        return np.stack([c * x - s * y + self.centre_mm[0], s * x + c * y + self.centre_mm[1]], axis=-1)

    def to_local(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(self.angle_rad), np.sin(self.angle_rad)
        dx, dy = X - self.centre_mm[0], Y - self.centre_mm[1]
        return (c * dx + s * dy) * self.mirror, -s * dx + c * dy


@dataclass
class RenderSettings:
    """Acquisition / processing / display parameters (all drawn by the generator)."""

    edge_enhance: float = 0.5  # unsharp-mask gain (σ 1.2 mm)
    range_compression: float = 0.35  # subtract this fraction of the ~15 mm background
    window_low: float = 0.3  # window bottom as a fraction of the median soft-tissue attenuation
    soft_tissue_level: float = 0.3  # display value of the median soft tissue (the gamma is solved for it)
    gamma: float = 1.0  # set by the renderer from soft_tissue_level
    s_curve: float = 0.3  # 0 = linear, 1 = smoothstep
    black: float = 0.02
    white: float = 0.97
    heel: float = 0.0  # exposure gradient top→bottom (log units across the image)
    noise: float = 0.012  # display-noise std in soft tissue
    detector_blur_mm: float = 0.1
    texture: float = 0.35  # trabecular texture amplitude (relative)
    collimation_mm: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # top, bottom, left, right
    collimation_angle_deg: float = 0.0
    collimation_level: float = 1.0  # display value outside the field (1 white: unexposed; 0 black: masked)
    collimation_blur_mm: float = 1.0
    markers: list = field(default_factory=list)  # [{"text": "R", "xy_mm": [x, y], "height_mm": 12}]

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def low_res_shape(shape: tuple[int, int], spacing: tuple[float, float]) -> tuple[int, int]:
    """Low-resolution grid used for the projection (≈0.3 mm, never finer than the image)."""
    return tuple(max(8, min(n, int(np.ceil(n * s / _TARGET_LOW_RES_MM)))) for n, s in zip(shape, spacing))


class _Grid:
    def __init__(self, shape, spacing):
        self.H, self.W = shape
        self.rs, self.cs = spacing
        self.h, self.w = low_res_shape(shape, spacing)
        self.fy, self.fx = self.H / self.h, self.W / self.w  # full px per low-res px
        self.sy, self.sx = self.rs * self.fy, self.cs * self.fx  # low-res spacing (mm)

    # low-res pixel index -> image mm (pixel centres; bilinear-upsampling convention, align_corners=False)
    def rows_mm(self, i):
        return ((np.asarray(i, dtype=np.float64) + 0.5) * self.fy - 0.5) * self.rs

    def cols_mm(self, j):
        return ((np.asarray(j, dtype=np.float64) + 0.5) * self.fx - 0.5) * self.cs

    def mm_to_lowres(self, pts_mm):
        col = (pts_mm[..., 0] / self.cs + 0.5) / self.fx - 0.5
        row = (pts_mm[..., 1] / self.rs + 0.5) / self.fy - 0.5
        return col, row


def _profile(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt(t * (2.0 - t))


def _signed_distance(grid: _Grid, outline_mm: np.ndarray, i0, i1, j0, j1):
    """Inside distance (mm, > 0 inside, ≤ 0 outside) on the low-res box [i0:i1, j0:j1]."""
    col, row = grid.mm_to_lowres(outline_mm)
    bh, bw = i1 - i0, j1 - j0
    img = Image.new("1", (bw, bh), 0)
    ImageDraw.Draw(img).polygon(list(zip((col - j0).tolist(), (row - i0).tolist())), fill=1)
    mask = np.asarray(img, dtype=bool)
    px = min(grid.sx, grid.sy)
    d = ndimage.distance_transform_edt(mask, sampling=(grid.sy, grid.sx)).astype(np.float64)
    d[mask] -= 0.5 * px
    band_px = 6
    band = (mask & (d <= band_px * px)) | (ndimage.binary_dilation(mask, iterations=2) & ~mask)
    bi, bj = np.nonzero(band)
    if len(bi) == 0:
        return d
    P = np.stack([grid.cols_mm(bj + j0), grid.rows_mm(bi + i0)], axis=1)
    V = outline_mm
    n = len(V)
    _, k = cKDTree(V).query(P)
    area2 = np.sum(V[:, 0] * np.roll(V[:, 1], -1) - np.roll(V[:, 0], -1) * V[:, 1])
    orient = 1.0 if area2 > 0 else -1.0
    best = np.full(len(P), np.inf)
    sign = np.zeros(len(P))
    for a_idx, b_idx in ((k - 1) % n, k), (k, (k + 1) % n):
        a, b = V[a_idx], V[b_idx]
        t = b - a
        tt = np.maximum((t * t).sum(axis=1), 1e-18)
        s = np.clip(((P - a) * t).sum(axis=1) / tt, 0.0, 1.0)
        q = a + s[:, None] * t
        dist = np.hypot(*(P - q).T)
        cross = (P - a)[:, 0] * t[:, 1] - (P - a)[:, 1] * t[:, 0]
        better = dist < best
        best = np.where(better, dist, best)
        sign = np.where(better, np.where(cross * orient > 0, -1.0, 1.0), sign)  # +1 inside
    mask_sign = np.where(mask[bi, bj], 1.0, -1.0)
    # the nearest segment decides near the outline (exact); PIL's rasterisation further away
    sign = np.where(best <= 3.0 * px, sign, mask_sign)
    d[bi, bj] = sign * best
    return d


def _render_bone(grid: _Grid, pose: KneePose, bone: Bone, L: np.ndarray, trab: np.ndarray) -> None:
    outline = pose.to_image(bone.outline)
    col, row = grid.mm_to_lowres(outline)
    i0, i1 = max(0, int(np.floor(row.min())) - 3), min(grid.h, int(np.ceil(row.max())) + 4)
    j0, j1 = max(0, int(np.floor(col.min())) - 3), min(grid.w, int(np.ceil(col.max())) + 4)
    if i1 - i0 < 2 or j1 - j0 < 2:
        return
    d = _signed_distance(grid, outline, i0, i1, j0, j1)
    inside = np.flatnonzero(d > 0)
    if len(inside) == 0:
        return
    bw = j1 - j0
    ii, jj = inside // bw + i0, inside % bw + j0
    xl, yl = pose.to_local(grid.cols_mm(jj), grid.rows_mm(ii))
    dd = d.reshape(-1)[inside]
    f = bone.fields(xl, yl, dd)
    D, R, c, mu = f["depth"], f["radius"], f["cortex"], f["mu_inner"]
    t_out = D * _profile(dd / R)
    t_in = np.maximum(D - 2 * c, 0.0) * _profile((dd - c) / np.maximum(R - c, 0.5))
    contrib = MU_CORTICAL * (t_out - t_in) + mu * t_in
    L.reshape(-1)[ii * grid.w + jj] += contrib.astype(np.float32)
    trab.reshape(-1)[ii * grid.w + jj] += (MU_TRABECULAR * f["texture"] * t_in).astype(np.float32)


def _soft_tissue(grid: _Grid, pose: KneePose, anatomy: KneeAnatomy) -> tuple[np.ndarray, int, int]:
    """Soft-tissue line integral of one leg on a column band of the low-res grid: (band, j0, j1)."""
    st = anatomy.soft_tissue
    reach = float(st.half_width.max() + abs(st.centre).max()) + 5.0
    xs = np.array([pose.centre_mm[0] - reach, pose.centre_mm[0] + reach])
    j0, j1 = (int(v) for v in np.clip(np.round((xs / grid.cs + 0.5) / grid.fx - 0.5) + [-2, 3], 0, grid.w))
    if j1 <= j0:
        return np.zeros((grid.h, 0), np.float32), 0, 0
    X = grid.cols_mm(np.arange(j0, j1)).astype(np.float32)[None, :]
    Y = grid.rows_mm(np.arange(grid.h)).astype(np.float32)[:, None]
    c, s = np.float32(np.cos(pose.angle_rad)), np.float32(np.sin(pose.angle_rad))
    dx, dy = X - np.float32(pose.centre_mm[0]), Y - np.float32(pose.centre_mm[1])
    xl = (c * dx + s * dy) * np.float32(pose.mirror)
    yl = -s * dx + c * dy
    # smooth profiles along the leg, looked up in a 0.25 mm table
    lut_y0, step = -700.0, 0.25
    idx = np.clip(np.rint((yl - lut_y0) / step), 0, st.lut.shape[1] - 1).astype(np.int32)
    cen, hw, hm = st.lut[0][idx], st.lut[1][idx], st.lut[2][idx]
    u = xl - cen
    outer = np.sqrt(np.maximum(hw * hw - u * u, 0.0))
    inner = np.sqrt(np.maximum(hm * hm - u * u, 0.0))
    depth = np.float32(2.0 * st.depth_ratio)
    return depth * (np.float32(MU_FAT) * (outer - inner) + np.float32(MU_MUSCLE) * inner), j0, j1


def _box_mean_downsample(a: np.ndarray, k: int) -> np.ndarray:
    h, w = (a.shape[0] // k) * k, (a.shape[1] // k) * k
    if h == 0 or w == 0:
        return a.copy()
    return a[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))


def _linear_weights(n_in: int, n_out: int):
    """Source indices and weights of 1-D linear resampling, half-pixel centres (align_corners=False)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _resize(channels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a ``(C, h, w)`` float32 stack to ``(C, H, W)``, pixel centres at half-pixel
    offsets (``align_corners=False``). Uses torch's kernel (a project dependency; 6× faster than
    numpy gathers), else numpy; both give the same values to float32 rounding."""
    C, h, w = channels.shape
    H, W = size
    if (h, w) == (H, W):
        return channels.astype(np.float32, copy=True)
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:  # pragma: no cover - torch is a dependency of kneel_monai
        torch = None
    if torch is not None:
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(channels, dtype=np.float32))[None]
            return F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)[0].numpy()
    r0, r1, tr = _linear_weights(h, H)
    c0, c1, tc = _linear_weights(w, W)
    out = np.empty((C, H, W), dtype=np.float32)
    tr = tr[:, None]
    for k in range(C):
        a = channels[k].astype(np.float32, copy=False)
        rows = a[r0] + (a[r1] - a[r0]) * tr  # (H, w)
        lo = rows[:, c0]
        lo += (rows[:, c1] - lo) * tc
        out[k] = lo
    return out


def _tone(L, lo, hi, s: RenderSettings):
    """Display curve (window, gamma, S-curve) and its slope d(display)/dL."""
    scale = np.float32(1.0 / (hi - lo))
    v = (L - np.float32(lo)) * scale
    inside = (v > 0) & (v < 1)
    v = np.clip(v, np.float32(1e-4), np.float32(1.0))
    g = v ** np.float32(s.gamma)
    sc = np.float32(s.s_curve)
    span = np.float32(s.white - s.black)
    disp = np.float32(s.black) + span * ((1 - sc) * g + sc * g * g * (3 - 2 * g))
    dg = np.float32(s.gamma) * g / v * scale
    slope = span * ((1 - sc) + sc * 6 * g * (1 - g)) * dg * inside
    return disp.astype(np.float32), slope.astype(np.float32)


def _texture_field(rng: np.random.Generator, shape, spacing, anisotropy: float = 2.6) -> np.ndarray:
    """Zero-mean, unit-variance trabecular texture (float32) on a full-resolution box.

    An anisotropic fractal-like Gaussian field (power ∝ |k|^-3 between ≈0.3 and ≈4 mm, stretched
    vertically: trabeculae run perpendicular to the joint surfaces), plus a band-pass field folded
    into ridges (plates and rods seen edge-on). Made by FFT filtering of white noise.
    """
    from scipy import fft

    h0, w0 = shape
    h, w = fft.next_fast_len(h0, real=True), fft.next_fast_len(w0, real=True)
    ky = fft.fftfreq(h, d=spacing[0])[:, None].astype(np.float32)  # cycles per mm
    kx = fft.rfftfreq(w, d=spacing[1])[None, :].astype(np.float32)
    k2 = kx * kx + ky * ky
    a = np.float32(anisotropy)
    kan2 = (kx / a) ** 2 + (ky * a) ** 2
    two_pi2 = np.float32(2 * np.pi**2)
    fractal = (kan2 + np.float32(0.3**2)) ** np.float32(-1.5 / 2) * np.exp(-two_pi2 * np.float32(0.1**2) * k2)
    band = np.exp(-two_pi2 * np.float32(0.3**2) * kan2) - np.exp(-two_pi2 * np.float32(0.8**2) * kan2)
    n1 = fft.rfft2(rng.standard_normal((h, w), dtype=np.float32), workers=1)
    f = fft.irfft2(n1 * fractal, s=(h, w), workers=1)
    b = fft.irfft2(n1 * band, s=(h, w), workers=1)
    f /= f.std() + 1e-12
    b /= b.std() + 1e-12
    ridge = np.exp(-((b / 0.6) ** 2))
    ridge -= ridge.mean()
    ridge /= ridge.std() + 1e-12
    out = 0.8 * f + 0.35 * ridge
    out /= out.std() + 1e-12
    out = out[:h0, :w0]
    # feather the box so that no edge shows
    out *= _feather(h0, 0.12)[:, None] * _feather(w0, 0.12)[None, :]
    return out.astype(np.float32)


def _feather(n: int, frac: float) -> np.ndarray:
    t = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5) / max(frac * n, 1.0)
    t = np.clip(t, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def _collimation_alpha(grid: _Grid, s: RenderSettings) -> np.ndarray:
    top, bottom, left, right = s.collimation_mm
    if max(top, bottom, left, right) <= 0:
        return np.ones((grid.h, grid.w), dtype=np.float32)
    X = grid.cols_mm(np.arange(grid.w))[None, :]
    Y = grid.rows_mm(np.arange(grid.h))[:, None]
    h_mm, w_mm = grid.H * grid.rs, grid.W * grid.cs
    a = np.radians(s.collimation_angle_deg)
    cx, cy = w_mm / 2, h_mm / 2
    sig = max(s.collimation_blur_mm, 0.05)

    def edge(v):
        return np.float32(0.5) * (np.float32(1.0) + np.tanh(np.clip(v / np.float32(sig), -6, 6)))

    X, Y = X.astype(np.float32), Y.astype(np.float32)
    xr = (np.cos(a) * (X - cx) + np.sin(a) * (Y - cy) + cx).astype(np.float32)
    yr = (-np.sin(a) * (X - cx) + np.cos(a) * (Y - cy) + cy).astype(np.float32)
    alpha = np.ones((grid.h, grid.w), dtype=np.float32)
    if top > 0:
        alpha = alpha * edge(yr - top)
    if bottom > 0:
        alpha = alpha * edge(h_mm - bottom - yr)
    if left > 0:
        alpha = alpha * edge(xr - left)
    if right > 0:
        alpha = alpha * edge(w_mm - right - xr)
    return alpha.astype(np.float32)


_FONT_CACHE: dict = {}


def _marker_mask(text: str, height_px: int) -> np.ndarray:
    from PIL import ImageFont

    key = (text, height_px)
    if key in _FONT_CACHE:
        return _FONT_CACHE[key]
    import matplotlib

    font_path = f"{matplotlib.get_data_path()}/fonts/ttf/DejaVuSans-Bold.ttf"
    font = ImageFont.truetype(font_path, size=max(6, int(height_px * 1.35)))
    x0, y0, x1, y1 = font.getbbox(text)
    pad = max(2, height_px // 4)
    img = Image.new("L", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), 0)
    ImageDraw.Draw(img).text((pad - x0, pad - y0), text, fill=255, font=font)
    m = np.asarray(img, dtype=np.float32) / 255.0
    _FONT_CACHE[key] = m
    return m


def _draw_markers(img: np.ndarray, spacing, s: RenderSettings, rng: np.random.Generator) -> None:
    rs, cs = spacing
    for mk in s.markers:
        hpx = max(8, int(round(mk["height_mm"] / rs)))
        m = _marker_mask(mk["text"], hpx)
        # a lead letter in a plastic holder: a faint frame, a bright letter
        frame = np.zeros_like(m)
        b = max(1, hpx // 12)
        frame[:b, :] = frame[-b:, :] = frame[:, :b] = frame[:, -b:] = 1.0
        m = ndimage.gaussian_filter(m, 0.6)
        x, y = mk["xy_mm"]
        r0, c0 = int(round(y / rs)) - m.shape[0] // 2, int(round(x / cs)) - m.shape[1] // 2
        r1, c1 = r0 + m.shape[0], c0 + m.shape[1]
        rr0, cc0, rr1, cc1 = max(r0, 0), max(c0, 0), min(r1, img.shape[0]), min(c1, img.shape[1])
        if rr1 <= rr0 or cc1 <= cc0:
            continue
        sub = img[rr0:rr1, cc0:cc1]
        mm = m[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0]
        ff = frame[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] * mk.get("frame", 0.0)
        level = mk.get("level", 0.97)
        sub += ff * 0.08
        sub[:] = sub * (1 - mm) + mm * (level + 0.01 * rng.standard_normal(mm.shape).astype(np.float32))


def render_radiograph(
    shape: tuple[int, int],
    spacing: tuple[float, float],
    knees: list[tuple[KneeAnatomy, KneePose]],
    settings: RenderSettings,
    rng: np.random.Generator,
    *,
    timings: dict | None = None,
) -> np.ndarray:
    """Render the radiograph, ``(H, W)`` float32 display values in [0, 1].

    ``knees``: the anatomies to draw with their poses (a knee that is absent is simply not in
    the list). ``timings``, if given, receives seconds spent in ``render`` (projection and
    processing at low resolution) and ``noise`` (full-resolution detail, noise, markers).
    """
    t0 = time.perf_counter()
    grid = _Grid(shape, spacing)
    L = np.zeros((grid.h, grid.w), dtype=np.float32)
    trab = np.zeros_like(L)
    for anatomy, pose in knees:
        band, j0, j1 = _soft_tissue(grid, pose, anatomy)
        # thighs that touch deform rather than overlap: take the larger of the two legs
        np.maximum(L[:, j0:j1], band, out=L[:, j0:j1])
    for anatomy, pose in knees:
        for bone in anatomy.bones:
            _render_bone(grid, pose, bone, L, trab)

    # --- acquisition and processing (low resolution) ---
    Y = grid.rows_mm(np.arange(grid.h))[:, None] / (grid.H * grid.rs)
    L += np.float32(settings.heel) * (Y - 0.5).astype(np.float32)
    fine = ndimage.gaussian_filter(L, 1.2 / grid.sx)
    k = max(1, int(round(2.0 / grid.sx)))
    coarse_small = ndimage.gaussian_filter(_box_mean_downsample(L, k), 15.0 / (grid.sx * k), mode="nearest")
    coarse = _resize(coarse_small[None], (grid.h, grid.w))[0]
    alpha = _collimation_alpha(grid, settings)
    field_px = alpha > 0.5
    Lp = L + settings.edge_enhance * (L - fine) - settings.range_compression * (coarse - coarse[field_px].mean())
    Lp = Lp.astype(np.float32)
    tissue = Lp[field_px & (L > 0.8)]
    soft_level = float(np.median(tissue)) if tissue.size else 2.0
    lo = settings.window_low * soft_level
    hi = float(np.percentile(Lp[field_px], 99.9)) if field_px.any() else soft_level * 1.8
    hi = max(hi, lo + 0.5)
    # the gamma that puts the median soft tissue at its display level (before the S-curve)
    v_st = min(max((soft_level - lo) / (hi - lo), 0.05), 0.95)
    target = (settings.soft_tissue_level - settings.black) / (settings.white - settings.black)
    settings.gamma = float(np.clip(np.log(max(target, 0.02)) / np.log(v_st), 0.6, 2.2))
    disp, slope = _tone(Lp, lo, hi, settings)
    # quantum noise in log units grows as exp(L/2) (fewer photons behind more attenuation); the
    # display noise is that times the display curve's slope, relative to the soft tissue's
    st_px = field_px & (L > 0.8)
    slope_st = max(float(np.median(slope[st_px])) if st_px.any() else 1.0, 1e-3)
    rel = np.minimum(slope / np.float32(slope_st) * np.exp(0.5 * (L - soft_level)), np.float32(2.5))
    noise_gain = np.float32(settings.noise) * (rel + np.float32(0.25))  # + electronic noise floor
    tex_gain = np.float32(settings.texture) * np.minimum(slope, np.float32(2.0 * slope_st)) * trab

    # collimation: outside the field the display is a constant level (unexposed or masked)
    lvl = np.float32(settings.collimation_level)
    disp = alpha * disp + (1.0 - alpha) * lvl
    noise_gain = alpha * noise_gain + (1.0 - alpha) * np.float32(0.2 * settings.noise)
    tex_gain = alpha * tex_gain
    t1 = time.perf_counter()

    # --- full resolution ---
    H, W = shape
    up = _resize(np.stack([disp, noise_gain, tex_gain]), (H, W))
    img, ngain, tgain = up[0], up[1], up[2]
    blur_px = settings.detector_blur_mm / spacing[0]
    noise = rng.standard_normal((H, W), dtype=np.float32)
    if blur_px > 0.3:
        noise = ndimage.gaussian_filter(noise, blur_px, truncate=3.0)
        noise *= np.float32(1.0 / max(float(noise[:: 7, :: 7].std()), 1e-6))
    noise *= ngain
    img += noise
    for anatomy, pose in knees:
        box = _knee_box(anatomy, pose, spacing, shape)
        if box is None:
            continue
        r0, r1, c0, c1 = box
        tex = _texture_field(rng, (r1 - r0, c1 - c0), spacing)
        img[r0:r1, c0:c1] += tgain[r0:r1, c0:c1] * tex
    _draw_markers(img, spacing, settings, rng)
    np.clip(img, 0.0, 1.0, out=img)
    t2 = time.perf_counter()
    if timings is not None:
        timings["render"] = timings.get("render", 0.0) + (t1 - t0)
        timings["noise"] = timings.get("noise", 0.0) + (t2 - t1)
    return img


def _knee_box(anatomy: KneeAnatomy, pose: KneePose, spacing, shape):
    """Full-resolution box (r0, r1, c0, c1) that holds the knee's trabecular bone."""
    lm = anatomy.landmarks
    W = float(lm[8, 0] - lm[0, 0])
    corners = np.array([[lm[0, 0] - 0.35 * W, -1.05 * W], [lm[8, 0] + 0.3 * W, -1.05 * W],
                        [lm[0, 0] - 0.35 * W, 1.15 * W], [lm[8, 0] + 0.3 * W, 1.15 * W]])
    img = pose.to_image(corners)
    c = img[:, 0] / spacing[1]
    r = img[:, 1] / spacing[0]
    r0, r1 = max(0, int(r.min())), min(shape[0], int(np.ceil(r.max())) + 1)
    c0, c1 = max(0, int(c.min())), min(shape[1], int(np.ceil(c.max())) + 1)
    if r1 - r0 < 8 or c1 - c0 < 8:
        return None
    return r0, r1, c0, c1
