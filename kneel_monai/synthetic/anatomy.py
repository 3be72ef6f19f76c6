"""Bone outlines and tissue parameters of one knee, built around its 16 landmarks.

Everything here is in the knee's **local frame**: millimetres, right-knee orientation
(x grows lateral → medial, y grows downwards), landmark 4 at the origin. The renderer
mirrors a left knee and places the frame in the image.

Each bone is a closed outline (a centripetal Catmull-Rom curve through control points, so it
passes *exactly* through its landmarks: femur 9-15 on the distal condyles, tibia 0-8 on the
plateau) plus smooth fields that describe its third dimension:

* ``depth`` D: antero-posterior thickness of the bone (mm);
* ``radius`` R: the in-plane distance over which the thickness rises from 0 at the outline to D
  (an elliptical profile, ``D·sqrt(1 − (1 − d/R)²)`` at distance d inside the outline);
* ``cortex`` c: cortical shell thickness (mm) — its projection makes the bright rims where the
  beam runs tangentially (shaft cortices, subchondral plates);
* ``mu_inner``: attenuation (per mm, in excess of soft tissue) of what fills the shell:
  trabecular bone in the epiphyses and metaphyses (with sclerosis near the joint at higher
  KL grades, subchondral cysts, physeal scars), fatty marrow in the shafts;
* ``texture``: weight of the trabecular texture added at full resolution.

The KL-like severity appears as (1) the shape model's grade-conditional landmarks (joint-space
narrowing, wider margins), (2) marginal osteophytes: the outline under/over each margin
landmark recedes so the margin becomes a lip whose tip is the landmark, (3) subchondral
sclerosis and a thicker subchondral plate, (4) cysts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = [
    "MU_CORTICAL",
    "MU_TRABECULAR",
    "MU_MARROW",
    "MU_MUSCLE",
    "MU_FAT",
    "catmull_rom",
    "Bone",
    "LegSoftTissue",
    "KneeAnatomy",
    "build_knee_anatomy",
]

# Linear attenuation coefficients per mm at an effective ~50 keV. Bone values are in excess of
# the soft tissue they displace (the soft-tissue envelope is rendered through the whole leg).
MU_MUSCLE = 0.0205
MU_FAT = 0.0170
MU_CORTICAL = 0.046
MU_TRABECULAR = 0.0105
MU_MARROW = 0.0012

Fields = Callable[[np.ndarray, np.ndarray, np.ndarray], dict]


def catmull_rom(points: np.ndarray, *, closed: bool = True, spacing: float = 0.2, alpha: float = 0.5) -> np.ndarray:
    """Centripetal Catmull-Rom curve through ``points`` ``(N, 2)``, sampled about every ``spacing``.

    The curve passes exactly through every control point (each is emitted as a sample), has
    no cusps or self-intersections within a segment, and little overshoot. Returns ``(M, 2)``;
    for a closed curve the first point is not repeated at the end.
    """
    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    if closed:
        ext = np.vstack([p[-1:], p, p[:2]])
        n_seg = n
    else:
        ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
        n_seg = n - 1
    out = []
    for i in range(n_seg):
        p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
        d01 = max(np.linalg.norm(p1 - p0) ** alpha, 1e-6)
        d12 = max(np.linalg.norm(p2 - p1) ** alpha, 1e-6)
        d23 = max(np.linalg.norm(p3 - p2) ** alpha, 1e-6)
        t0, t1 = 0.0, d01
        t2, t3 = t1 + d12, t1 + d12 + d23
        seg = np.linalg.norm(p2 - p1)
        m = max(2, int(np.ceil(seg / spacing)), int(np.ceil(seg / 1.0)) if seg > 60 else 0)
        if seg > 60:  # long shaft segments are nearly straight: 1 mm sampling is exact enough
            m = max(2, int(np.ceil(seg / 1.0)))
        t = np.linspace(t1, t2, m, endpoint=False)[:, None]
        a1 = (t1 - t) / (t1 - t0) * p0 + (t - t0) / (t1 - t0) * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        c = (t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2
        c[0] = p1  # exact control point
        out.append(c)
    if not closed:
        out.append(p[-1:])
    return np.vstack(out)


def _smoothstep(v: np.ndarray, v0: float, v1: float) -> np.ndarray:
    t = np.clip((v - v0) / (v1 - v0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _ramp(v, v0, v1, a, b):
    return a + (b - a) * _smoothstep(v, v0, v1)


@dataclass
class Bone:
    """One bone: a closed outline in the local frame and its 3-D / tissue fields."""

    name: str
    outline: np.ndarray  # (M, 2) mm, closed (first point not repeated)
    fields: Fields  # (x, y, d) local mm arrays, d = depth inside the outline (mm) -> dict
    extent: tuple[float, float, float, float] | None = None  # optional x0, y0, x1, y1 clip (local mm)


@dataclass
class LegSoftTissue:
    """Soft-tissue envelope of one leg, as functions of local y (mm): centre, half width, fat, depth."""

    y_knots: np.ndarray
    centre: np.ndarray
    half_width: np.ndarray
    fat: np.ndarray
    depth_ratio: float
    lut: np.ndarray = field(init=False, repr=False)  # (3, n) float32: centre, half width, muscle half width

    def __post_init__(self) -> None:
        from scipy.interpolate import PchipInterpolator

        y = np.arange(-700.0, 700.0 + 1e-9, 0.25)
        cen = PchipInterpolator(self.y_knots, self.centre)(y)
        hw = PchipInterpolator(self.y_knots, self.half_width)(y)
        fat = PchipInterpolator(self.y_knots, self.fat)(y)
        self.lut = np.stack([cen, hw, np.maximum(hw - fat, 1.0)]).astype(np.float32)


@dataclass
class KneeAnatomy:
    landmarks: np.ndarray  # (16, 2) local mm
    kl: int
    bones: list[Bone]
    soft_tissue: LegSoftTissue
    params: dict = field(default_factory=dict)


def _lerp(a, b, t):
    return a + (b - a) * t


def _density_blobs(rng, n, x_range, y_range, amp=0.14, size=(5.0, 14.0)):
    """Smooth random density variation: a multiplier field made of ``n`` Gaussian blobs."""
    blobs = [(rng.uniform(*x_range), rng.uniform(*y_range), rng.uniform(*size), rng.uniform(-amp,
                                                                                            amp)) for _ in range(n)]

    def field(x, y):
        m = np.ones_like(x)
        for bx, by, bs, ba in blobs:
            m += ba * np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * bs * bs))
        return m

    return field


# Osteophyte size (mm) ranges per KL grade: (low, high) for the uniform draw.
_OSTEOPHYTE_MM = {0: (0.0, 0.0), 1: (0.0, 1.2), 2: (1.0, 3.0), 3: (2.0, 4.5), 4: (3.0, 6.5)}
_SCLEROSIS = {0: (0.0, 0.08), 1: (0.0, 0.15), 2: (0.1, 0.35), 3: (0.3, 0.7), 4: (0.6, 1.2)}


def build_knee_anatomy(landmarks: np.ndarray, kl: int, rng: np.random.Generator) -> KneeAnatomy:
    """Bones and soft tissue of a knee whose landmarks (local mm, right-knee orientation) are given."""
    lm = np.asarray(landmarks, dtype=np.float64)
    T, F = lm[:9], lm[9:]
    u = rng.uniform
    Wt = float(T[8, 0] - T[0, 0])
    Wf = float(F[6, 0] - F[0, 0])
    lo, hi = _OSTEOPHYTE_MM[int(kl)]
    # medial compartment narrows first; medial osteophytes are the larger ones on average
    ost = {
        "tibia_lateral": u(lo, hi) * u(0.6, 1.0),
        "tibia_medial": u(lo, hi),
        "femur_lateral": u(lo, hi) * u(0.6, 1.0),
        "femur_medial": u(lo, hi),
    }
    jsw_med = float(T[7, 1] - F[5, 1])
    jsw_lat = float(T[1, 1] - F[1, 1])
    s_lo, s_hi = _SCLEROSIS[int(kl)]
    scl = u(s_lo, s_hi)
    scl_med = scl * (1.0 + 0.6 * np.clip((4.8 - jsw_med) / 3.0, 0, 1))
    scl_lat = scl * (0.5 + 0.6 * np.clip((5.8 - jsw_lat) / 3.0, 0, 1))

    params: dict = {"osteophytes_mm": {k: round(float(v), 3) for k, v in ost.items()},
                    "sclerosis": {"medial": round(float(scl_med), 3), "lateral": round(float(scl_lat), 3)}}

    bones = [
        _femur(F, T, Wf, ost, scl_lat, scl_med, rng, params),
        _tibia(T, Wt, ost, scl_lat, scl_med, int(kl), rng, params),
        _fibula(T, Wt, rng, params),
        _patella(F, Wf, rng, params),
    ]
    if rng.random() < 0.12:  # fabella: sesamoid behind the lateral femoral condyle
        bones.append(_fabella(F, rng, params))
    soft = _soft_tissue(T, F, Wt, rng, params)
    return KneeAnatomy(landmarks=lm, kl=int(kl), bones=bones, soft_tissue=soft, params=params)


# --- femur -------------------------------------------------------------------------------


def _femur(F, T, W, ost, scl_lat, scl_med, rng, params) -> Bone:
    u = rng.uniform
    ws = W * u(0.37, 0.43)  # shaft width
    valgus = np.radians(u(4.0, 8.0))  # anatomical axis: shaft runs laterally (−x) going up
    x_ref = F[3, 0] + W * u(-0.03, 0.04)
    y_meta = F[0, 1] - W * u(1.05, 1.3)  # where the shaft starts

    def shaft_x(y):
        return x_ref + (y - y_meta) * np.tan(valgus)  # y < y_meta -> more lateral

    top = -600.0
    lat_edge, med_edge = shaft_x(y_meta) - ws / 2, shaft_x(y_meta) + ws / 2
    s_l, s_m = ost["femur_lateral"], ost["femur_medial"]
    epi_l, epi_m = W * u(0.0, 0.025), W * u(0.01, 0.035)
    lat = [
        (shaft_x(top) - ws * 0.47, top),
        (lat_edge, y_meta),
        (_lerp(F[0, 0], lat_edge, u(0.75, 0.85)), F[0, 1] - W * u(0.78, 0.86)),
        (_lerp(F[0, 0], lat_edge, u(0.3, 0.42)), F[0, 1] - W * u(0.5, 0.56)),
        (F[0, 0] - epi_l + s_l * 0.8, F[0, 1] - W * u(0.24, 0.3)),
        (F[0, 0] - epi_l * 0.4 + s_l, F[0, 1] - W * 0.085 - 0.4 * s_l),
    ]
    if s_l > 0.6:  # beak: the margin landmark becomes the tip of a downward-lateral spur
        lat.append((F[0, 0] + 0.5 * s_l, F[0, 1] - 0.35 * s_l - 0.5))
    med = []
    if s_m > 0.6:
        med.append((F[6, 0] - 0.5 * s_m, F[6, 1] - 0.35 * s_m - 0.5))
    med += [
        (F[6, 0] + epi_m * 0.4 - s_m, F[6, 1] - W * 0.085 - 0.4 * s_m),
        (F[6, 0] + epi_m - s_m * 0.8, F[6, 1] - W * u(0.24, 0.32)),
        (_lerp(F[6, 0], med_edge, u(0.28, 0.4)), F[6, 1] - W * u(0.52, 0.6)),  # adductor tubercle region
        (_lerp(F[6, 0], med_edge, u(0.75, 0.88)), F[6, 1] - W * u(0.8, 0.9)),
        (med_edge, y_meta),
        (shaft_x(top) + ws * 0.47, top),
    ]
    ctrl = np.array(lat + [tuple(p) for p in F] + med)
    outline = catmull_rom(ctrl, closed=True, spacing=0.15)

    depth_cond = W * u(0.76, 0.84)
    depth_shaft = ws * u(0.92, 1.0)
    joint_y = float(np.mean(F[[1, 5], 1]))
    scar_y = joint_y - W * u(0.28, 0.38)
    scar_amp = u(0.0, 0.18)
    scar_phase = u(0, 2 * np.pi)
    notch_x, notch_y = F[3, 0], F[3, 1]
    cort_shaft = u(3.8, 5.5)
    blobs = _density_blobs(rng, 8, (F[0, 0], F[6, 0]), (y_meta + 10, joint_y))
    supra_y, supra_amp = joint_y - W * u(0.45, 0.6), u(0.05, 0.2)

    def fields(x, y, d):
        D = _ramp(y, y_meta - 10, F[0, 1] - W * 0.3, depth_shaft, depth_cond)
        R = _ramp(y, y_meta - 10, F[0, 1] - W * 0.35, ws / 2, 13.0)
        c = _ramp(y, y_meta - 60, y_meta + 15, cort_shaft, 1.0)
        # subchondral plate: thicker and sclerotic near the distal surface with severity
        near_joint = _smoothstep(y, joint_y - 25, joint_y - 4)
        side = scl_lat + (scl_med - scl_lat) * _smoothstep(x, notch_x - 10.0, notch_x + 10.0)
        c = c + near_joint * (0.25 + 0.8 * side) * np.exp(-np.maximum(d - 1.0, 0) / 2.0)
        mu = MU_TRABECULAR * _ramp(y, y_meta - 40, y_meta + 20, 0.12, 1.0)
        scar = scar_y - 0.04 * np.abs(x - notch_x) + 1.5 * np.sin(x / 11.0 + scar_phase)
        mu = mu * (1.0 + scar_amp * np.exp(-(((y - scar) / 1.2) ** 2)))
        mu = mu * (1.0 + near_joint * 1.8 * side * np.exp(-np.maximum(d - 1.0, 0) / 5.0))
        mu = mu * blobs(x, y) * (1.0 - supra_amp * np.exp(-(((y - supra_y) / 12.0) ** 2 + ((x - notch_x) / 20.0) ** 2)))
        tex = _ramp(y, y_meta - 40, y_meta + 20, 0.15, 1.0)
        # the intercondylar notch region is thinner (two condyles, no bone between them posteriorly)
        notch = np.exp(-(((x - notch_x) / 9.0) ** 2)) * _smoothstep(y, notch_y - 22, notch_y - 2)
        D = D * (1.0 - 0.45 * notch)
        return {"depth": D, "radius": R, "cortex": c, "mu_inner": mu, "texture": tex}

    params["femur"] = {"shaft_width_mm": round(ws, 2), "valgus_deg": round(float(np.degrees(valgus)), 2)}
    return Bone("femur", outline, fields)


# --- tibia -------------------------------------------------------------------------------


def _tibia(T, W, ost, scl_lat, scl_med, kl, rng, params) -> Bone:
    u = rng.uniform
    ws = W * u(0.31, 0.36)
    tilt = np.radians(rng.normal(0.0, 1.2))
    x_ref = T[4, 0] + W * u(-0.05, 0.01)
    y_meta = max(T[0, 1], T[8, 1]) + W * u(0.95, 1.15)

    def shaft_x(y):
        return x_ref + (y - y_meta) * np.tan(tilt)

    bottom = 600.0
    lat_edge, med_edge = shaft_x(y_meta) - ws / 2, shaft_x(y_meta) + ws / 2
    s_l, s_m = ost["tibia_lateral"], ost["tibia_medial"]
    med = []
    if s_m > 0.6:
        med.append((T[8, 0] - 0.45 * s_m, T[8, 1] + 0.3 * s_m + 0.5))
    med += [
        (T[8, 0] - W * 0.004 - s_m, T[8, 1] + W * 0.05 + 0.5 * s_m),
        (T[8, 0] - W * u(0.02, 0.04) - 0.7 * s_m, T[8, 1] + W * u(0.15, 0.2)),
        (_lerp(T[8, 0], med_edge, u(0.38, 0.5)), T[8, 1] + W * u(0.42, 0.5)),
        (_lerp(T[8, 0], med_edge, u(0.8, 0.9)), T[8, 1] + W * u(0.72, 0.8)),
        (med_edge, y_meta),
        (shaft_x(bottom) + ws * 0.42, bottom),
        (shaft_x(bottom) - ws * 0.42, bottom),
        (lat_edge, y_meta),
        (_lerp(T[0, 0], lat_edge, u(0.8, 0.9)), T[0, 1] + W * u(0.68, 0.76)),
        (_lerp(T[0, 0], lat_edge, u(0.35, 0.48)), T[0, 1] + W * u(0.38, 0.45)),
        (T[0, 0] + W * u(0.015, 0.035) + 0.7 * s_l, T[0, 1] + W * u(0.14, 0.18)),
        (T[0, 0] + W * 0.004 + s_l, T[0, 1] + W * 0.05 + 0.5 * s_l),
    ]
    if s_l > 0.6:
        med.append((T[0, 0] + 0.45 * s_l, T[0, 1] + 0.3 * s_l + 0.5))
    ctrl = np.array([tuple(p) for p in T] + med)
    outline = catmull_rom(ctrl, closed=True, spacing=0.15)

    depth_plateau = W * u(0.58, 0.66)
    depth_shaft = ws * u(0.95, 1.05)
    cort_shaft = u(3.5, 5.0)
    base_x = np.array([T[0, 0], T[2, 0], T[6, 0], T[8, 0]])
    base_y = np.array([T[0, 1], T[2, 1], T[6, 1], T[8, 1]])
    plateau_y = float(np.mean(T[[1, 7], 1]))
    scar_y = plateau_y + W * u(0.2, 0.28)
    scar_amp = u(0.0, 0.18)
    # posterior plateau rims: a faint second line a little below each compartment's plateau
    rims = [(T[0, 0] + 2.0, T[2, 0] - 1.0, u(1.0, 3.5), u(0.1, 0.45), u(-1.0, 1.5)),
            (T[6, 0] + 1.0, T[8, 0] - 2.0, u(1.0, 3.5), u(0.1, 0.45), u(-1.0, 1.5))]
    blobs = _density_blobs(rng, 8, (T[0, 0], T[8, 0]), (plateau_y, y_meta))
    meta_y, meta_amp = plateau_y + W * u(0.45, 0.6), u(0.08, 0.22)
    cysts = []
    n_cysts = int(rng.poisson({3: 0.4, 4: 1.0}.get(kl, 0.0)))
    for _ in range(n_cysts):
        side = 1.0 if rng.random() < 0.75 else -1.0
        cx = side * u(0.12, 0.38) * W
        cysts.append((cx, np.interp(cx, base_x, base_y) + u(4.0, 10.0), u(2.0, 4.5), u(1.6, 3.2)))
    params["tibia"] = {"shaft_width_mm": round(ws, 2), "cysts": len(cysts)}

    def fields(x, y, d):
        yb = np.interp(x, base_x, base_y)  # plateau surface without the spines
        spine = _smoothstep(yb - y, 0.0, 4.0) * np.exp(-(((x - T[4, 0]) / (W * 0.15)) ** 4))
        D = _ramp(y, plateau_y + W * 0.12, y_meta, depth_plateau, depth_shaft) * (1.0 - 0.62 * spine)
        R = _ramp(y, plateau_y + 3, plateau_y + 18, 5.0, 13.0)
        R = _ramp(y, plateau_y + 30, y_meta, R, ws / 2)
        c = _ramp(y, y_meta - 20, y_meta + 50, 0.9, cort_shaft)
        near_joint = 1.0 - _smoothstep(y - yb, 4.0, 22.0)
        side = scl_lat + (scl_med - scl_lat) * _smoothstep(x, T[4, 0] - 10.0, T[4, 0] + 10.0)
        c = c + near_joint * (0.3 + 0.9 * side) * np.exp(-np.maximum(d - 1.0, 0) / 2.0)
        mu = MU_TRABECULAR * _ramp(y, y_meta - 15, y_meta + 35, 1.0, 0.12)
        mu = mu * (1.0 + near_joint * 1.9 * side * np.exp(-np.maximum(d - 1.0, 0) / 5.0))
        scar_line = y - scar_y + 0.05 * np.abs(x - T[4, 0]) - 1.2 * np.sin(x / 9.0)
        mu = mu * (1.0 + scar_amp * np.exp(-((scar_line / 1.2) ** 2)))
        for xa, xb, drop, amp, bow in rims:
            t = np.clip((x - xa) / (xb - xa), 0.0, 1.0)
            arc = yb + drop + bow * 4.0 * t * (1.0 - t)
            inside_x = _smoothstep(x, xa - 1, xa + 4) * (1.0 - _smoothstep(x, xb - 4, xb + 1))
            mu = mu + MU_CORTICAL * amp * 0.25 * np.exp(-(((y - arc) / 0.45) ** 2)) * inside_x
        # denser epiphysis under the plateau, a more lucent metaphyseal centre
        mu = mu * (1.0 + 0.12 * _smoothstep(y - yb, 2.0, 8.0) * (1.0 - _smoothstep(y - yb, 18.0, 30.0)))
        mu = mu * blobs(x, y) * (1.0 - meta_amp * np.exp(-(((y - meta_y) / 14.0) ** 2 + ((x - T[4, 0]) / 16.0) ** 2)))
        for cx, cy, rx, ry in cysts:
            r2 = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
            rim = np.exp(-(((np.sqrt(r2) - 1.15) / 0.35) ** 2))
            mu = mu * (1.0 - 0.45 * np.exp(-(r2**2))) + MU_TRABECULAR * 0.35 * rim
        tex = _ramp(y, y_meta - 15, y_meta + 35, 1.0, 0.15)
        return {"depth": D, "radius": R, "cortex": c, "mu_inner": mu, "texture": tex}

    return Bone("tibia", outline, fields)


# --- fibula, patella, fabella -------------------------------------------------------------


def _fibula(T, W, rng, params) -> Bone:
    u = rng.uniform
    r = u(10.5, 13.5)
    hcx = T[0, 0] + r - u(-3.0, 5.0)
    apex_y = T[0, 1] + u(8.0, 16.0)
    hcy = apex_y + r
    tilt = np.radians(u(1.0, 4.0))  # shaft runs slightly medially going down
    wn = 2 * r * u(0.5, 0.6)
    wsh = u(11.0, 14.0)
    x_fs = hcx - 0.2 * r

    def sx(y):
        return x_fs + (y - hcy) * np.tan(tilt)

    y_neck = hcy + 1.8 * r
    y_sh = hcy + 4.5 * r
    bot = 600.0
    ctrl = np.array([
        (hcx - 0.4 * r, apex_y - u(0.0, 3.0)),  # styloid apex
        (hcx - 0.95 * r, hcy - 0.35 * r),
        (hcx - 0.92 * r, hcy + 0.45 * r),
        (sx(y_neck) - wn / 2, y_neck),
        (sx(y_sh) - wsh / 2, y_sh),
        (sx(bot) - wsh * 0.4, bot),
        (sx(bot) + wsh * 0.4, bot),
        (sx(y_sh) + wsh / 2, y_sh),
        (sx(y_neck) + wn / 2, y_neck),
        (hcx + 0.9 * r, hcy + 0.35 * r),
        (hcx + 0.85 * r, hcy - 0.5 * r),
        (hcx + 0.15 * r, hcy - 0.92 * r),
    ])
    outline = catmull_rom(ctrl, closed=True, spacing=0.15)
    cort = u(2.0, 3.0)

    def fields(x, y, d):
        D = _ramp(y, hcy, y_neck + 10, 2 * r * 0.78, wsh)
        R = _ramp(y, hcy, y_neck + 10, r * 1.0, wsh / 2)
        c = _ramp(y, y_neck - 5, y_sh, 0.8, cort)
        mu = MU_TRABECULAR * _ramp(y, y_neck, y_sh, 1.0, 0.15)
        tex = _ramp(y, y_neck, y_sh, 0.9, 0.1)
        return {"depth": D, "radius": R, "cortex": c, "mu_inner": mu, "texture": tex}

    params["fibula"] = {"head_radius_mm": round(r, 2)}
    return Bone("fibula", outline, fields)


def _patella(F, W, rng, params) -> Bone:
    u = rng.uniform
    a = W * u(0.26, 0.31)  # half width
    b = a * u(1.0, 1.15)  # half height
    cx = F[3, 0] + W * u(-0.09, 0.02)
    cy = F[3, 1] - u(6.0, 18.0) - b * 0.5
    rot = np.radians(rng.normal(0.0, 4.0))
    phi = np.linspace(0, 2 * np.pi, 14, endpoint=False)
    px = a * np.cos(phi)
    py = b * np.sin(phi)
    lower = np.clip(np.sin(phi), 0, None)
    px = px * (1.0 - 0.38 * lower**1.5)  # pointed lower pole (apex)
    py = py * (1.0 + 0.08 * lower)
    ctrl = np.stack([cx + np.cos(rot) * px - np.sin(rot) * py, cy + np.sin(rot) * px + np.cos(rot) * py], axis=1)
    outline = catmull_rom(ctrl, closed=True, spacing=0.15)
    depth = u(11.0, 17.0)

    def fields(x, y, d):
        one = np.ones_like(x)
        return {"depth": depth * one, "radius": 0.95 * a * one, "cortex": 0.45 * one,
                "mu_inner": MU_TRABECULAR * one, "texture": 0.5 * one}

    params["patella"] = {"centre_mm": [round(float(cx), 2), round(float(cy), 2)], "half_width_mm": round(float(a), 2)}
    return Bone("patella", outline, fields)


def _fabella(F, rng, params) -> Bone:
    u = rng.uniform
    r = u(3.0, 5.0)
    cx = F[1, 0] + u(-4.0, 4.0)
    cy = F[1, 1] - u(12.0, 22.0)
    phi = np.linspace(0, 2 * np.pi, 10, endpoint=False)
    ctrl = np.stack([cx + r * np.cos(phi), cy + r * 1.2 * np.sin(phi)], axis=1)
    outline = catmull_rom(ctrl, closed=True, spacing=0.1)

    def fields(x, y, d):
        one = np.ones_like(x)
        return {"depth": 2 * r * one, "radius": r * one, "cortex": 0.7 * one,
                "mu_inner": MU_TRABECULAR * one, "texture": 0.4 * one}

    params["fabella"] = True
    return Bone("fabella", outline, fields)


# --- soft tissue ---------------------------------------------------------------------------


def _soft_tissue(T, F, W, rng, params) -> LegSoftTissue:
    u = rng.uniform
    bmi = u(0.85, 1.3)  # body habitus: scales widths and the fat layer
    knee_hw = W * u(0.68, 0.78) * bmi
    y = np.array([-700.0, -260.0, -120.0, -30.0, 20.0, 100.0, 260.0, 700.0])
    hw = np.array([
        knee_hw * 1.55, knee_hw * u(1.35, 1.55), knee_hw * u(1.1, 1.25), knee_hw,
        knee_hw * u(0.95, 1.02), knee_hw * u(1.0, 1.12), knee_hw * 0.8, knee_hw * 0.7,
    ])
    # thigh centre sits medial (+x) of the laterally inclined femur; knee slightly medial of the joint
    centre = np.array([-40.0, u(-20.0, -5.0), u(-6.0, 4.0), u(0.0, 6.0), u(0.0, 5.0), u(-4.0, 4.0), u(-8.0, 2.0),
                       -10.0])
    fat = np.array([15.0, 14.0, 11.0, 7.0, 7.0, 9.0, 8.0, 6.0]) * bmi**2 * u(0.6, 1.3)
    params["soft_tissue"] = {"habitus": round(float(bmi), 3), "knee_half_width_mm": round(float(knee_hw), 2)}
    return LegSoftTissue(y_knots=y, centre=centre, half_width=hw, fat=np.minimum(fat, hw * 0.4), depth_ratio=u(0.88,
                                                                                                               1.02))
