"""Synthetic bilateral PA knee radiographs with exact landmark ground truth, and writers.

``generate_radiograph(seed)`` draws everything from ``seed`` (same seed → bit-identical
image and ground truth): image size and spacing, where the knees are, each knee's landmarks
from the shape model (:mod:`.shape_model`) and its anatomy (:mod:`.anatomy`), acquisition and
display settings; then renders (:mod:`.render`). The random streams are split so that a
knee's anatomy depends only on the seed and the side, not on the image size or spacing.

Landmarks are ``(x, y)`` = ``(column, row)`` pixels of the whole image with anatomical ids
(id 0 is the lateral tibial margin on either knee). Radiological convention: the patient's
right knee ("R") is on the image's left half; the left knee ("L") on the right half, mirrored
(its id 0 has the larger x).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write
from ..data.ground_truth import GT_FORMAT, GroundTruth, KneeTruth
from ..landmarks import SIDES
from .anatomy import build_knee_anatomy
from .render import KneePose, RenderSettings, render_radiograph
from .shape_model import ShapeModel, load_shape_model, sample_knee_shape

__all__ = [
    "GT_FORMAT",
    "SIDES",
    "SPACINGS_MM",
    "SyntheticRadiograph",
    "generate_radiograph",
    "ground_truth_dict",
    "write_radiograph",
    "generate_dataset",
    "DATASET_FORMAT",
]

DATASET_FORMAT = "kneel-monai/synthetic-dataset"
#: detector pitches of common DR/CR systems (mm); one is drawn when no spacing is given
SPACINGS_MM = (0.139, 0.1397, 0.143, 0.144, 0.148, 0.15, 0.16, 0.168, 0.175, 0.2)
_MIN_SIDE_PX, _MAX_SIDE_PX = 2000, 2900


@dataclass
class SyntheticRadiograph:
    """One synthetic radiograph and its ground truth.

    ``image``: ``(H, W)`` float32 display intensities in [0, 1] (bone bright).
    ``knees``: ``{"R": {"landmarks_px": (16, 2) float64 (x, y) whole-image px, "kl": int} | None, "L": ...}``.
    ``params``: every generation parameter (JSON-able).
    """

    image: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    knees: dict[str, dict | None]
    seed: int
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def image_size(self) -> tuple[int, int]:
        return (int(self.image.shape[0]), int(self.image.shape[1]))


# --- sampling ------------------------------------------------------------------------------


def _as_spacing(spacing_mm) -> tuple[float, float] | None:
    if spacing_mm is None:
        return None
    arr = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"spacing_mm must be a positive number or (row, col), got {spacing_mm!r}")
    return float(arr[0]), float(arr[1])


def _kl_per_side(kl, sides, rng: np.random.Generator, model: ShapeModel) -> dict[str, int]:
    if isinstance(kl, Mapping):
        out = {s: int(kl[s]) for s in sides if kl.get(s) is not None}
    elif kl is not None:
        out = {s: int(kl) for s in sides}
    else:
        out = {}
    # patient-level severity: the two knees of one patient are correlated
    first = int(rng.choice(np.asarray(model.kl_grades), p=model.kl_frequencies))
    other = int(np.clip(first + rng.choice([-2, -1, 0, 1, 2], p=[0.05, 0.2, 0.5, 0.2, 0.05]), 0, 4))
    drawn = {"R": first, "L": other} if rng.random() < 0.5 else {"R": other, "L": first}
    for s in sides:
        out.setdefault(s, drawn[s])
        if out[s] not in model.kl_grades:
            raise ValueError(f"kl must be one of {model.kl_grades}, got {out[s]!r} for side {s}")
    return out


def _render_settings(rng: np.random.Generator, h_mm: float, w_mm: float, lm_mm: dict, sides) -> RenderSettings:
    u = rng.uniform
    s = RenderSettings(
        edge_enhance=u(0.2, 0.9),
        range_compression=u(0.15, 0.5),
        window_low=u(0.0, 0.45),
        soft_tissue_level=u(0.2, 0.42),
        s_curve=u(0.0, 0.35),
        black=u(0.0, 0.06),
        white=u(0.9, 1.0),
        heel=u(-0.15, 0.15),
        noise=u(0.006, 0.022),
        detector_blur_mm=u(0.05, 0.15),
        texture=u(0.14, 0.26),
    )
    # collimation: some sides show the shutters' edge; they never reach the knees
    pts = np.vstack(list(lm_mm.values()))
    room = (pts[:, 1].min() - 60.0, h_mm - pts[:, 1].max() - 60.0, pts[:, 0].min() - 55.0, w_mm - pts[:,
                                                                                                      0].max() - 55.0)
    coll = []
    for r in room:
        coll.append(float(u(3.0, min(35.0, r))) if (r > 5.0 and rng.random() < 0.55) else 0.0)
    s.collimation_mm = tuple(coll)
    s.collimation_angle_deg = float(rng.normal(0.0, 0.4))
    s.collimation_level = float(u(0.88, 1.0)) if rng.random() < 0.65 else float(u(0.0, 0.04))
    s.collimation_blur_mm = u(0.4, 2.0)
    # side markers: lead letters near a corner of the exposed field, on the side they name
    letters = []
    roll = rng.random()
    if len(sides) == 1:
        letters = [sides[0]]
    elif roll < 0.45:
        letters = ["R"]
    elif roll < 0.65:
        letters = ["L"]
    else:
        letters = ["R", "L"]
    top_edge = coll[0] + u(12.0, 30.0)
    bottom_edge = h_mm - coll[1] - u(12.0, 30.0)
    y = top_edge if rng.random() < 0.6 else bottom_edge
    for letter in letters:
        hgt = u(8.0, 15.0)
        x = coll[2] + u(14.0, 35.0) if letter == "R" else w_mm - coll[3] - u(14.0, 35.0)
        s.markers.append({"text": letter, "xy_mm": [float(x), float(y)], "height_mm": float(hgt),
                          "frame": float(rng.random() < 0.5), "level": float(u(0.9, 1.0))})
    return s


def generate_radiograph(
    seed: int,
    *,
    spacing_mm: float | tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
    knees: Sequence[str] = SIDES,
    kl: int | Mapping[str, int] | None = None,
    crop: str | None = None,
    shape_model: ShapeModel | None = None,
) -> SyntheticRadiograph:
    """Generate one bilateral (or single-knee) PA knee radiograph, deterministically from ``seed``.

    Args:
        seed: any non-negative integer.
        spacing_mm: pixel spacing (one value or ``(row, col)``); default: one of :data:`SPACINGS_MM`.
        size: ``(H, W)`` pixels; default: a real film size (≈300–390 × 340–440 mm) at the
            spacing, each side clipped to 2000–2900 px.
        knees: which knees are present, ``("R", "L")``, ``("R",)`` or ``("L",)``. An absent
            knee's leg is not in the image and its ground truth is ``None``. A single knee keeps
            its place on its half of the image (R left, L right).
        kl: KL grade for both knees, ``{"R": k, "L": k}``, or None (drawn; the two knees of a
            patient are correlated).
        crop: None or ``"tight"`` (a smaller field around the knees, e.g. a cropped export;
            sides may fall below 2000 px).
        shape_model: default: the shipped model.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    sides = tuple(dict.fromkeys(str(k).upper() for k in knees))
    if not sides or not set(sides) <= set(SIDES):
        raise ValueError(f"knees must be a non-empty subset of {SIDES}, got {knees!r}")
    if crop not in (None, "tight"):
        raise ValueError(f"crop must be None or 'tight', got {crop!r}")
    model = shape_model or load_shape_model()
    root = np.random.SeedSequence(seed)
    ss_layout, ss_r, ss_l, ss_render = root.spawn(4)
    rng = np.random.default_rng(ss_layout)
    side_rng = {"R": np.random.default_rng(ss_r), "L": np.random.default_rng(ss_l)}

    # --- image geometry
    spacing = _as_spacing(spacing_mm)
    spacing_draw = float(rng.choice(SPACINGS_MM))
    if spacing is None:
        spacing = (spacing_draw, spacing_draw)
    h_mm_draw, w_mm_draw = rng.uniform(300.0, 390.0), rng.uniform(340.0, 440.0)
    if crop == "tight":
        h_mm_draw, w_mm_draw = rng.uniform(200.0, 260.0), rng.uniform(300.0, 350.0)
    if size is None:
        lo, hi = (_MIN_SIDE_PX, _MAX_SIDE_PX) if crop is None else (1000, _MAX_SIDE_PX)
        H = int(np.clip(round(h_mm_draw / spacing[0]), lo, hi))
        W = int(np.clip(round(w_mm_draw / spacing[1]), lo, hi))
    else:
        H, W = (int(v) for v in size)
        if H < 256 or W < 256:
            raise ValueError(f"size must be at least 256 × 256 px, got {size!r}")
    h_mm, w_mm = H * spacing[0], W * spacing[1]

    # --- knees: shapes, anatomy, poses
    kls = _kl_per_side(kl, sides, rng, model)
    sep = rng.uniform(150.0, 200.0)
    if len(sides) == 2 and w_mm < 130.0 + 2 * 60.0:
        raise ValueError(f"a {w_mm:.0f} mm wide image is too narrow for two knees (need >= 250 mm)")
    sep = float(max(min(sep, w_mm - 2 * 60.0), 130.0))
    pair_x = w_mm / 2 + rng.uniform(-12.0, 12.0)
    joint_y = h_mm * rng.uniform(0.42, 0.55) if crop is None else h_mm * rng.uniform(0.45, 0.55)
    rot_sd = np.radians(model.rotation_std_deg)
    knees_out: dict[str, dict | None] = {s: None for s in SIDES}
    placed = []
    lm_mm = {}
    knee_params = {}
    layout_draws = {s: (rng.uniform(-6.0, 6.0), float(np.clip(rng.normal(0.0, rot_sd), -3 * rot_sd, 3 * rot_sd)))
                    for s in SIDES}
    for side in sides:
        srng = side_rng[side]
        shape = sample_knee_shape(srng, kls[side], model=model)
        anatomy = build_knee_anatomy(shape, kls[side], srng)
        dy, angle = layout_draws[side]
        cx = pair_x - sep / 2 if side == "R" else pair_x + sep / 2
        pose = KneePose(centre_mm=(float(cx), float(joint_y + dy)), angle_rad=float(angle),
                        mirror=1 if side == "R" else -1)
        pts = pose.to_image(shape)
        # keep every landmark ≥ 15 mm inside the image (narrow fields)
        shift = np.zeros(2)
        for axis, extent in ((0, w_mm), (1, h_mm)):
            lo_gap = pts[:, axis].min() - 15.0
            hi_gap = extent - 15.0 - pts[:, axis].max()
            if lo_gap < 0:
                shift[axis] = -lo_gap
            elif hi_gap < 0:
                shift[axis] = hi_gap
        if np.any(shift != 0):
            pose = KneePose((pose.centre_mm[0] + shift[0], pose.centre_mm[1] + shift[1]), pose.angle_rad, pose.mirror)
            pts = pose.to_image(shape)
        on_own_half = pts[:, 0].max() < w_mm / 2 if side == "R" else pts[:, 0].min() > w_mm / 2
        if not on_own_half:
            raise ValueError(f"a {w_mm:.0f} mm wide image cannot hold the {side} knee on its own half")
        lm_mm[side] = pts
        px = np.stack([pts[:, 0] / spacing[1], pts[:, 1] / spacing[0]], axis=1)
        knees_out[side] = {"landmarks_px": px, "kl": int(kls[side])}
        placed.append((anatomy, pose))
        knee_params[side] = {
            "kl": int(kls[side]),
            "centre_mm": [round(pose.centre_mm[0], 4), round(pose.centre_mm[1], 4)],
            "rotation_deg": round(float(np.degrees(pose.angle_rad)), 4),
            "landmarks_local_mm": np.round(shape, 4).tolist(),
            "anatomy": anatomy.params,
        }

    rrng = np.random.default_rng(ss_render)
    settings = _render_settings(rrng, h_mm, w_mm, lm_mm, sides)
    timings: dict = {}
    image = render_radiograph((H, W), spacing, placed, settings, rrng, timings=timings)
    params = {
        "generator": "kneel_monai.synthetic",
        "seed": seed,
        "image_size": [H, W],
        "pixel_spacing_mm": [spacing[0], spacing[1]],
        "knees_present": list(sides),
        "crop": crop,
        "knee_separation_mm": round(sep, 4),
        "knees": knee_params,
        "render": settings.as_dict(),
    }
    return SyntheticRadiograph(image=image, pixel_spacing_mm=spacing, knees=knees_out, seed=seed,
                               params=params, timings=timings)


# --- ground truth and writers --------------------------------------------------------------


def ground_truth_dict(sample: SyntheticRadiograph, image_name: str | None = None, *,
                      include_params: bool = True) -> dict:
    """The ground-truth JSON object of ``sample`` (:mod:`kneel_monai.data.ground_truth`'s format, written
    by its one writer), marked synthetic with its seed (and, with ``include_params``, how it was drawn).

    ``image_name``: the image file's name (relative to the JSON's folder).
    """
    knees = {side: None if (k := sample.knees.get(side)) is None else
             KneeTruth(np.asarray(k["landmarks_px"], dtype=np.float64), int(k["kl"])) for side in SIDES}
    extra: dict[str, Any] = {"synthetic": True, "seed": int(sample.seed)}
    if include_params:
        extra["generation"] = sample.params
    truth = GroundTruth(None, Path(image_name if image_name is not None else f"synthetic_{sample.seed:06d}.dcm"),
                        knees, f"synthetic-{sample.seed}",
                        pixel_spacing_mm=(float(sample.pixel_spacing_mm[0]), float(sample.pixel_spacing_mm[1])),
                        image_size=(int(sample.image_size[0]), int(sample.image_size[1])), extra=extra)
    return truth.to_dict()


def to_uint(image: np.ndarray, bits: int) -> np.ndarray:
    """[0, 1] display image → unsigned integers on ``bits`` bits (uint8 for ≤ 8 bits, else uint16)."""
    top = (1 << int(bits)) - 1
    arr = np.rint(np.clip(image, 0.0, 1.0).astype(np.float64) * top)
    return arr.astype(np.uint8 if bits <= 8 else np.uint16)


def write_radiograph(
    sample: SyntheticRadiograph,
    out_dir: str | os.PathLike,
    stem: str,
    fmt: str = "dcm",
    **dicom_options: Any,
) -> tuple[Path, Path]:
    """Write ``<stem>.dcm`` (or ``<stem>.png``) and ``<stem>.json`` (ground truth) atomically.

    PNG: 16-bit grey (display intensities × 65535) with the spacing as the pHYs resolution.
    DICOM: :func:`kneel_monai.io.dicom_writer.write_dicom` with ``dicom_options``
    (``bits_stored`` default 12, ``photometric``, ``modality``, ``transfer_syntax``,
    ``spacing_tag`` …); UIDs are derived from the seed unless ``uid_seed`` is given.
    Returns ``(image_path, json_path)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fmt = fmt.lower().lstrip(".")
    if fmt == "png":
        if dicom_options:
            raise TypeError(f"DICOM options given for a PNG: {sorted(dicom_options)}")
        from PIL import Image

        img_path = out / f"{stem}.png"
        arr = to_uint(sample.image, 16)
        dpi = (25.4 / sample.pixel_spacing_mm[1], 25.4 / sample.pixel_spacing_mm[0])

        def _png(tmp: Path) -> None:
            Image.fromarray(arr).save(tmp, format="PNG", dpi=dpi, compress_level=3)

        atomic_write(img_path, _png)
    elif fmt in ("dcm", "dicom"):
        from ..io.dicom_writer import write_dicom

        img_path = out / f"{stem}.dcm"
        opts = dict(dicom_options)
        bits = int(opts.pop("bits_stored", 12))
        present = [s for s in SIDES if sample.knees.get(s) is not None]
        opts.setdefault("laterality", "B" if len(present) == 2 else (present[0] if present else None))
        opts.setdefault("series_description", "Bilateral PA Fixed Flexion Knee (synthetic)")
        opts.setdefault("patient_id", f"SYNTHETIC-{sample.seed}")
        opts.setdefault("uid_seed", f"kneel-synthetic-{sample.seed}")
        pixels = to_uint(sample.image, bits)
        atomic_write(img_path, lambda tmp: write_dicom(tmp, pixels, sample.pixel_spacing_mm, bits_stored=bits, **opts))
    else:
        raise ValueError(f"fmt must be 'dcm' or 'png', got {fmt!r}")
    json_path = out / f"{stem}.json"
    text = json.dumps(ground_truth_dict(sample, img_path.name), indent=1, allow_nan=False) + "\n"
    atomic_write(json_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return img_path, json_path


# --- cohorts ---------------------------------------------------------------------------------

_TRANSFER_SYNTAX_MIX = (
    ("explicit_vr_little_endian", 0.45),
    ("implicit_vr_little_endian", 0.15),
    ("rle_lossless", 0.12),
    ("jpeg2000_lossless", 0.14),
    ("jpeg_lossless", 0.14),
)


def _dicom_options(rng: np.random.Generator) -> dict:
    names = [n for n, _ in _TRANSFER_SYNTAX_MIX]
    probs = np.array([p for _, p in _TRANSFER_SYNTAX_MIX])
    return {
        "photometric": "MONOCHROME1" if rng.random() < 0.35 else "MONOCHROME2",
        "bits_stored": int(rng.choice([12, 12, 14, 15, 16])),
        "modality": "CR" if rng.random() < 0.3 else "DX",
        "transfer_syntax": str(rng.choice(names, p=probs / probs.sum())),
        "spacing_tag": str(rng.choice(["ImagerPixelSpacing", "ImagerPixelSpacing", "both", "PixelSpacing"])),
    }


#: the largest side ``generate_dataset`` draws (real detectors: up to about 4,300 px)
MAX_SIDE_PX = 10_000


def generate_dataset(
    out_dir: str | os.PathLike,
    n: int,
    seed: int = 0,
    *,
    fmt: str = "mixed",
    single_knee_fraction: float = 0.1,
    tight_crop_fraction: float = 0.05,
    png_fraction: float = 0.25,
    spacing_mm: float | None = None,
    size: tuple[int, int] | None = None,
    kl: int | None = None,
    real_knees: Sequence[Any] | None = None,
    real_knee_fraction: float = 1.0,
    single_field_fraction: float = 0.0,
    progress: bool = True,
) -> Path:
    """Write ``n`` radiographs (+ ground-truth JSONs) and ``dataset.json`` into ``out_dir``.

    ``fmt``: "dcm", "png" or "mixed" (``png_fraction`` PNGs, the rest DICOM). DICOM files vary:
    MONOCHROME1/2, 12–16 bits stored, DX/CR, ImagerPixelSpacing/PixelSpacing/both, native and
    compressed transfer syntaxes (a syntax whose encoder is not installed falls back to explicit
    VR little endian, recorded in the index as ``transfer_syntax_requested``). Spacings and sizes
    vary per image unless given. Deterministic for ``seed``. Returns the index's path.

    ``real_knees`` (:func:`~kneel_monai.synthetic.composite.read_real_knees`): that fraction
    (``real_knee_fraction``) of the images gets real knees composited in place of its synthetic ones
    (:func:`~kneel_monai.synthetic.composite.composite_real_knees`); ``single_field_fraction`` of the
    bilateral images are written as two single-knee fields side by side
    (:func:`~kneel_monai.synthetic.composite.single_knee_fields`). Both are for training stage 1.
    """
    if fmt not in ("dcm", "png", "mixed"):
        raise ValueError(f"fmt must be 'dcm', 'png' or 'mixed', got {fmt!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size is not None and not all(64 <= int(v) <= MAX_SIDE_PX for v in size):
        raise ValueError(f"size must be two numbers of pixels from 64 to {MAX_SIDE_PX} (a radiograph's), got "
                         f"{tuple(size)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    item_seeds = np.random.SeedSequence(int(seed)).generate_state(max(n, 1), dtype=np.uint32)[:n]
    width = max(5, len(str(n - 1)) if n else 1)
    items = []
    from tqdm.auto import tqdm

    # the real-knee draws have their own stream, so the synthetic films are the same with or without them
    real_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x4EA1]))
    if real_knees:
        from .composite import composite_real_knees, single_knee_fields
    for i in tqdm(range(n), desc="synth", unit="img", disable=not progress):
        item_seed = int(item_seeds[i])
        single = rng.random() < single_knee_fraction
        knees = (("R",) if rng.random() < 0.5 else ("L",)) if single else SIDES
        crop = "tight" if (not single and rng.random() < tight_crop_fraction) else None
        item_fmt = fmt if fmt != "mixed" else ("png" if rng.random() < png_fraction else "dcm")
        opts = _dicom_options(rng) if item_fmt == "dcm" else {}
        sample = generate_radiograph(item_seed, spacing_mm=spacing_mm, size=size, knees=knees, kl=kl, crop=crop)
        layout = "bilateral" if not single else "single_knee"
        if real_knees:
            if real_rng.random() < real_knee_fraction:
                sample = composite_real_knees(sample, real_knees, real_rng)
            if not single and real_rng.random() < single_field_fraction:
                sample, layout = single_knee_fields(sample, real_rng), "single_knee_fields"
        stem = f"synth_{i:0{width}d}"
        entry: dict[str, Any] = {}
        try:
            img_path, json_path = write_radiograph(sample, out, stem, item_fmt, **opts)
        except NotImplementedError as err:
            warnings.warn(f"{stem}: {err}; writing explicit VR little endian instead", stacklevel=2)
            entry["transfer_syntax_requested"] = opts["transfer_syntax"]
            opts["transfer_syntax"] = "explicit_vr_little_endian"
            img_path, json_path = write_radiograph(sample, out, stem, item_fmt, **opts)
        entry.update({
            "image": img_path.name,
            "ground_truth": json_path.name,
            "seed": item_seed,
            "format": item_fmt,
            "pixel_spacing_mm": list(sample.pixel_spacing_mm),
            "image_size": list(sample.image_size),
            "knees": {s: (None if sample.knees[s] is None else int(sample.knees[s]["kl"])) for s in SIDES},
            "crop": crop,
            "layout": layout,
        })
        if "real_knees" in sample.params:
            entry["real_knees"] = sample.params["real_knees"]
        if opts:
            entry["dicom"] = opts
        items.append(entry)
    index = {
        "format": DATASET_FORMAT,
        "format_version": 1,
        "synthetic": True,
        "seed": int(seed),
        "n": int(n),
        "generator": "kneel_monai.synthetic",
        "items": items,
    }
    path = out / "dataset.json"
    text = json.dumps(index, indent=1, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path
