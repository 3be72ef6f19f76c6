"""Which knees a radiograph holds: candidates verified by the shape of their 16 landmarks.

Stage 1's ROI network proposes one knee centre per image half; on real films (other positioning,
processing, zoom, one knee only) it is often wrong. So a proposal is only believed when stage 2,
started there, returns 16 points with a knee's shape (:mod:`kneel_monai.shape_plausibility`, fitted
on annotated real knees) and enough heat-map confidence. When no proposal is believed, stage 2 first
starts on a small grid around each (stage 1 on a real film often lands beside the knee). When that
does not give two such knees, a **scan** starts stage 2 on a grid over the whole image at a few ROI
zooms (a knee larger or smaller than expected, e.g. a JPEG with a guessed spacing), keeps the most
knee-like answers, refines them, and merges answers on the same knee. A lateral view, a foot or a
long-leg film gives no knee-shaped answer anywhere and so no knee.

**Zoom.** A JPEG's spacing is a guess, and knees differ in size: on the development films the
landmark network gave a knee-shaped answer only when the knee, as it sees it, was within about
−15 %/+50 % of the size it learnt (a knee shown too small is the common failure). Each proposal is
therefore tried at a few ROI zooms, and every answer is **re-zoomed by its own size**: the network's
16 points track the knee in the image, so their size (:func:`knee_size_mm`) against the annotated
knees' mean (:data:`KNEE_SIZE_MM`) says how much to zoom; two rounds converge. One knee found
off-centre (one knee of a bilateral film) has its partner looked for in the other half at the same
zoom, on a finer grid — both knees of a film share its scale.

Sides: two knees are the patient's right (image left, radiological convention) and left. A single
knee's side comes from the DICOM laterality tag when it says R or L; else, when the knee lies
off the image's centre (one knee of a bilateral film, the other not found or cut off), from where
it lies, as for two knees; else (a knee centred in the field) from the anatomy — the
landmark model runs on the knee as a right knee and mirrored as a left one, and the orientation
whose landmarks the network is clearly surer of (higher mean heat-map confidence) wins: it learnt
right knees, so a left knee seen unmirrored — fibula and plateau shapes on the wrong side — gives
flatter heat-maps — else from the user's ``single_knee_side``; the result records which.

Everything here works in one pixel frame (the image stage 2 reads, see ``KneelPredictor``); the
zoom only changes how many millimetres the network believes a pixel is, never a pixel position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .image import image_like
from .landmarks import KNEE_CENTRE_ID
from .transforms.functional import pixel_spacing

__all__ = ["ScanSettings", "Candidate", "zoomed", "grid_starts", "local_starts", "partner_searched", "room_for_partner",
           "near_misses", "eased_partners", "PARTNER_SIZE_RATIO", "knee_rank", "at_same_place", "orientation_at",
           "distinct_knees", "off_centre_side",
           "SIDE_SOURCES", "KNEE_SIZE_MM", "knee_size_mm", "size_zoom", "NON_AP_VIEW_POSITIONS", "header_view",
           "mirrored_display"]

#: an annotated knee's size (:func:`knee_size_mm`): the mean of the 317 knees of the real OAI crop
#: set's training part (KNEEL annotations; sd 2.4 mm, 95 % within 21.5–30.0 mm)
KNEE_SIZE_MM = 25.3

#: how much the two knees of one film may differ in size (:func:`knee_size_mm`) for an eased partner
#: (:func:`eased_partners`): the annotated OAI subjects with both knees (28) differ by at most 5 %; 25 % leaves
#: room for the landmark error on a knee unlike those the model learnt
PARTNER_SIZE_RATIO = 1.25

#: how a knee's side was decided (``KneeResult.side_source``)
SIDE_SOURCES = ("image_position", "dicom_laterality", "anatomy", "user", "anatomy_uncertain")


#: DICOM ViewPosition (0018,5101) values that are not an AP/PA projection: the defined terms for a lateral
#: (LL, RL) and an oblique (LLO, RLO) projection, and two spellings some systems write. The decubitus
#: terms (RLD, LLD) are AP/PA projections of a lying patient and are not here.
NON_AP_VIEW_POSITIONS = {"LL": "lateral", "RL": "lateral", "LAT": "lateral", "LATERAL": "lateral",
                         "LLO": "oblique", "RLO": "oblique"}


def header_view(view_position: object) -> str | None:
    """``"lateral"``/``"oblique"`` when a DICOM ViewPosition says the image is not an AP/PA view, else None
    (AP, PA, an empty tag, a JPEG)."""
    return NON_AP_VIEW_POSITIONS.get(str(view_position or "").strip().upper())


def mirrored_display(patient_orientation: object) -> bool:
    """Whether a DICOM PatientOrientation (``R\\F``: the patient direction of increasing column first) says the
    image is shown mirrored from the radiological convention: columns running to the patient's **right**, so the
    patient's right knee is on the image's right. ``L`` (the convention), no tag, or a direction without R/L
    (a lateral view's ``A``/``P``): False."""
    first = str(patient_orientation or "").split("\\")[0].strip().upper()
    return "R" in first and "L" not in first


@dataclass(frozen=True)
class ScanSettings:
    """How knees are looked for and believed.

    Attributes:
        knee_shape_limit: a knee is reported present only when its shape distance is at most this.
            Annotated real knees lie below about 5 (the quality flag's limit); on the development
            films no lateral view, foot or long-leg film gave any answer below 7.8 (0.4.0: 7.89; about
            1,300 scan starts with size re-zooming).
        scan: look over the whole image when the stage-1 proposals do not give two knees.
        stride_mm: grid step of the scan (stage 2 pulls a start from about 50 mm onto a knee).
        zooms: ROI zooms tried by the scan (1 = the image's spacing as read; > 1 shows the knee larger).
        proposal_zooms: ROI zooms each stage-1 proposal is tried at (the most knee-like answer goes on).
        size_rounds: how many times an answer is re-zoomed by its size (0: never); a re-zoomed answer
            replaces the previous one only when its shape is at least as knee-like.
        zoom_range: the zooms re-zooming may reach (the spacing as read may be off by this much).
        other_knee_stride_mm: grid step of the search for the partner of one off-centre knee.
        local_stride_mm, local_steps: when no proposal is believed, stage 2 is first started on a small
            grid around each proposal (``2 * local_steps + 1`` starts a side, ``local_stride_mm`` apart, at
            the proposal's zoom) before the whole image is scanned: on real bilateral films stage 1 often
            lands 20–35 mm beside the knee, where one ROI's answer stays off the joint. ``local_steps`` 0
            skips it.
        whole_image: when no half's proposal is believed, stage 1 also runs on the whole image as one input
            (a knee alone in the middle of the field is split by the halves), its centre tried like a proposal.
        partner_room: a lone knee found before the scan, with less than this many of its tibial plateau widths
            of image between its centre and either side edge, has no room beside it for a second knee: the
            scan is skipped, and its side does not come from where it lies. On the development films single-knee
            images left at most 1.43, bilateral films at least 3.1 on the other knee's side. 0 always scans.
        keep: how many of the scan's most knee-like answers are refined.
        same_knee_mm: answers whose knee centres (landmark 4) are closer than this are one knee.
        side_margin, fibula_margin: a lone knee's side is decided by its anatomy
            (:func:`kneel_monai.side.decide_side`) when the fibula says a side by at least ``fibula_margin``
            (image standard deviations) and the orientation with the surer heat-maps — by at least
            ``side_margin`` in mean landmark confidence — is the same side, on landmarks that pass the
            quality check. On the real OAI crops run as single-knee images
            (``benchmarks/eval_single_knee_side.py``) 397 of 523 knees are called sure, none wrongly
            (validation 77 of 105, test 82 of 104); 0.4.3's heat-maps alone (margin 0.02) called 433 and
            got 58 wrong. On the development films both pieces of anatomy fail for some knees of
            bilateral standing films — hence position before anatomy for off-centre knees.
        centred_fraction: a lone knee whose centre is more than this fraction of the image width
            from the middle, with room beside it for a second knee (``partner_room``), is one knee of a bilateral
            film: its side is where it lies, unless its anatomy, sure, says the other side (then the anatomy's,
            flagged). A knee with no room beside it is a single-knee field wherever it lies (since 0.5.1).
        near_miss_margin: an answer whose shape distance lies above ``knee_shape_limit`` by at most this much
            (:func:`near_misses`) is tried again from its centre at every zoom of ``zooms`` and
            ``proposal_zooms`` before anything is believed: the severe-OA knees of the development films lie
            at 5.3–6 at their best zoom and 6.3–6.6 at a neighbouring one, while no lateral view, foot or
            long-leg film gave any answer below 7.8. 0 switches it off.
        partner_margin: when one knee of a bilateral film is believed (found off-centre) and nothing else, the
            partner search's most knee-like answer whose shape distance lies above ``knee_shape_limit`` by at most
            this much (:func:`eased_partners`: on the other half, at the knee's height and zoom, of a like size) is
            reported as the other knee, always quality ``check`` (``detection.eased_partner``): on the development
            films the knee replacement of a bilateral film lies at 6.2, its landmarks on the implant's joint line.
            Never eases a film without a believed knee. 0 switches it off.
        partner_min_confidence: the mean heat-map confidence an eased partner needs instead of the predictor's
            ``min_confidence``: heat-maps that are not flat (a flat map gives 0.002). An implant's are flatter than
            a native knee's (the development films' knee replacement: 0.20), and near the limit confidence does
            not tell knees from other answers (the closest non-knee answers there: 0.17–0.23) — the shape, the
            place and the size do.
        fallback_roi: when the ROI model's proposals (halves, then the whole image) give no knee, and its model
            file names a fallback ROI model (``model_io``), that model's proposals are tried the same way
            before the local search and the scan. ``False`` uses the first model only.
        header_view_check: an image whose DICOM ViewPosition says a lateral or oblique projection
            (:data:`NON_AP_VIEW_POSITIONS`) is reported as no AP knee, with that reason, without running
            the models; ``False`` looks for knees whatever the header says (a mislabelled header).
        follow_patient_orientation: an image whose DICOM PatientOrientation says it is shown mirrored
            (:func:`mirrored_display`: the patient's right on the image's right) is read mirrored back to the
            radiological convention, so that the image's left knee is still the patient's right; the
            landmarks are given in the image's own pixels. ``False`` ignores the tag.
    """

    knee_shape_limit: float | None = 6.0
    scan: bool = True
    stride_mm: float = 70.0
    zooms: tuple[float, ...] = (0.75, 1.0, 1.35, 1.8)
    proposal_zooms: tuple[float, ...] = (0.8, 1.0, 1.25, 1.55)
    size_rounds: int = 2
    zoom_range: tuple[float, float] = (0.5, 2.5)
    other_knee_stride_mm: float = 35.0
    local_stride_mm: float = 30.0
    local_steps: int = 1
    whole_image: bool = True
    partner_room: float = 2.0
    keep: int = 6
    same_knee_mm: float = 60.0
    side_margin: float = 0.0
    fibula_margin: float = 0.1
    centred_fraction: float = 0.15
    near_miss_margin: float = 1.5
    partner_margin: float = 1.5
    partner_min_confidence: float = 0.1
    fallback_roi: bool = True
    header_view_check: bool = True
    follow_patient_orientation: bool = True

    def __post_init__(self) -> None:
        for name in ("zooms", "proposal_zooms", "zoom_range"):  # a config or JSON gives lists
            object.__setattr__(self, name, tuple(float(z) for z in getattr(self, name)))
        if self.knee_shape_limit is not None and not self.knee_shape_limit > 0:
            raise ValueError(f"knee_shape_limit must be > 0 or None, got {self.knee_shape_limit}")
        if not (self.stride_mm > 0 and self.same_knee_mm > 0 and self.keep >= 1 and self.side_margin >= 0
                and self.fibula_margin >= 0):
            raise ValueError("stride_mm and same_knee_mm must be > 0, keep >= 1, side_margin and fibula_margin >= 0")
        for name in ("zooms", "proposal_zooms"):
            zooms = getattr(self, name)
            if not zooms or not all(z > 0 for z in zooms):
                raise ValueError(f"{name} must be a non-empty list of positive numbers, got {zooms}")
        low, high = self.zoom_range
        if not (0 < low <= 1 <= high) or self.size_rounds < 0 or not self.other_knee_stride_mm > 0:
            raise ValueError("zoom_range must hold 1 (0 < low <= 1 <= high), size_rounds >= 0, "
                             "other_knee_stride_mm > 0")
        if not self.near_miss_margin >= 0:
            raise ValueError(f"near_miss_margin must be >= 0 (0 switches the sweep off), got {self.near_miss_margin}")
        if not (self.partner_margin >= 0 and 0 <= self.partner_min_confidence <= 1):
            raise ValueError(f"partner_margin must be >= 0 (0 switches easing off) and partner_min_confidence from 0 "
                             f"to 1, got {self.partner_margin} and {self.partner_min_confidence}")
        if not self.partner_room >= 0:
            raise ValueError(f"partner_room must be >= 0 (plateau widths; 0 always scans), got {self.partner_room}")
        if not (self.local_stride_mm > 0 and isinstance(self.local_steps, int) and self.local_steps >= 0):
            raise ValueError(f"local_stride_mm must be > 0 and local_steps a whole number >= 0, got "
                             f"{self.local_stride_mm} and {self.local_steps!r}")


@dataclass
class Candidate:
    """One stage-2 answer: 16 points (pixels of the working image) of a knee seen in ``orientation``."""

    orientation: str  # "R": as the network sees right knees; "L": mirrored first
    landmarks_px: np.ndarray
    confidence: np.ndarray
    shape_distance: float
    zoom: float = 1.0
    source: str = "stage1"  # "stage1" | "whole" | "local" | "scan" | "partner" | "side"

    @property
    def centre(self) -> np.ndarray:
        return self.landmarks_px[KNEE_CENTRE_ID]

    @property
    def mean_confidence(self) -> float:
        return float(np.mean(self.confidence))


def knee_size_mm(points_mm: np.ndarray) -> float:
    """A knee's size: root-mean-square distance of its 16 landmarks (mm) to their centroid."""
    p = np.asarray(points_mm, dtype=np.float64)
    return float(np.sqrt(((p - p.mean(axis=0)) ** 2).sum(axis=1).mean()))


def size_zoom(points_mm: np.ndarray, zoom_range: tuple[float, float]) -> float:
    """The ROI zoom that shows a knee whose landmarks (mm as read) are ``points_mm`` at the annotated
    knees' mean size, kept within ``zoom_range``."""
    size = knee_size_mm(points_mm)
    if not np.isfinite(size) or size <= 0:
        return 1.0
    return float(np.clip(KNEE_SIZE_MM / size, *zoom_range))


def zoomed(image, zoom: float):
    """The same pixels with every millimetre ``zoom`` times larger (spacing × zoom): an ROI of a
    fixed size in mm then covers ``1/zoom`` as much of the image. Pixel positions are unchanged."""
    if zoom == 1.0:
        return image
    affine = torch.as_tensor(image.affine, dtype=torch.float64).clone()
    affine[:2] *= zoom
    return image_like(image, image.as_tensor(), affine)


def grid_starts(image, stride_mm: float) -> list[np.ndarray]:
    """``(x, y)`` pixel centres of a grid with ``stride_mm`` steps covering the image (centred margins)."""
    h, w = image.shape[-2:]
    row_mm, col_mm = pixel_spacing(torch.as_tensor(image.affine, dtype=torch.float64))

    def axis(n_px: int, mm: float) -> np.ndarray:
        extent = n_px * mm
        count = max(1, int(np.ceil(extent / stride_mm - 0.25)))
        return ((np.arange(count) + 0.5) * extent / count) / mm - 0.5

    return [np.array([x, y]) for y in axis(h, row_mm) for x in axis(w, col_mm)]


def local_starts(image, centre: np.ndarray, stride_mm: float, steps: int) -> list[np.ndarray]:
    """``(x, y)`` pixel centres of a ``(2 * steps + 1)``² grid, ``stride_mm`` apart, around ``centre`` (itself
    first), kept inside the image."""
    h, w = image.shape[-2:]
    row_mm, col_mm = pixel_spacing(torch.as_tensor(image.affine, dtype=torch.float64))
    offsets = sorted(((dx, dy) for dy in range(-steps, steps + 1) for dx in range(-steps, steps + 1)),
                     key=lambda o: (abs(o[0]) + abs(o[1]), o[1], o[0]))
    out = []
    for dx, dy in offsets:
        x, y = centre[0] + dx * stride_mm / col_mm, centre[1] + dy * stride_mm / row_mm
        if -0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5:
            out.append(np.array([x, y], dtype=np.float64))
    return out


def partner_searched(knee: Candidate, searched: Sequence[Candidate], mm: float, same_knee_mm: float) -> bool:
    """Whether the partner of ``knee`` was already looked for: from an answer on the same knee (centres closer
    than ``same_knee_mm``; ``mm`` per pixel) at the same zoom (within 5 %). The partner search runs at the
    knee's zoom, so a better answer on the same knee at another zoom (e.g. the scan's after a local search's)
    looks again."""
    return any(np.linalg.norm(knee.centre - k.centre) * mm < same_knee_mm and abs(knee.zoom / k.zoom - 1) < 0.05
               for k in searched)


def room_for_partner(knee: Candidate, width_px: int, plateau_widths: float) -> bool:
    """Whether the image leaves room beside ``knee`` for a second knee: at least ``plateau_widths`` of its tibial
    plateau (landmarks 0 to 8) between its centre and one side edge of an image ``width_px`` wide."""
    plateau = float(np.linalg.norm(knee.landmarks_px[0] - knee.landmarks_px[8]))
    x = float(knee.centre[0])
    return max(x + 0.5, width_px - 0.5 - x) >= plateau_widths * plateau


def off_centre_side(x: float, width: int, centred_fraction: float) -> str | None:
    """The side a lone knee at column ``x`` lies on, when it lies more than ``centred_fraction`` of the
    width from the middle (one knee of a bilateral film: right knees on the image's left); else None."""
    offset = x / max(width - 1, 1) - 0.5
    if abs(offset) <= centred_fraction:
        return None
    return "R" if offset < 0 else "L"


def orientation_at(x: float, width: int) -> str:
    """The orientation to try first at column ``x``: the image's left half holds right knees."""
    return "R" if x < (width - 1) / 2 else "L"


def knee_rank(c: Candidate) -> tuple[float, float]:
    """Sort key of answers, most knee-like first: the lowest shape distance, then the surest heat-maps."""
    return c.shape_distance, -c.mean_confidence


def at_same_place(c: Candidate, others: Sequence[Candidate], mm_per_px: float, same_place_mm: float = 20.0) -> bool:
    """Whether an answer of ``others`` in ``c``'s orientation has its centre within ``same_place_mm`` of ``c``'s."""
    return any(k.orientation == c.orientation and np.linalg.norm(c.centre - k.centre) * mm_per_px < same_place_mm
               for k in others)


def distinct_knees(candidates: Sequence[Candidate], mm_per_px: float, same_knee_mm: float) -> list[Candidate]:
    """The most knee-like answer per knee: best (lowest shape distance) first, later answers whose
    centre lies within ``same_knee_mm`` of a kept one dropped."""
    kept: list[Candidate] = []
    for c in sorted(candidates, key=knee_rank):
        if not np.isfinite(c.shape_distance):
            continue
        if all(np.linalg.norm(c.centre - k.centre) * mm_per_px >= same_knee_mm for k in kept):
            kept.append(c)
    return kept


def near_misses(candidates: Sequence[Candidate], limit: float | None, margin: float, swept: Sequence[Candidate],
                mm_per_px: float, same_place_mm: float = 20.0) -> list[Candidate]:
    """Answers just beyond the knee-shape ``limit`` (``limit < distance <= limit + margin``), most knee-like
    first, one per place (centres ``same_place_mm`` apart) and orientation, none where an answer of ``swept``
    already was. A real knee's answer at a zoom that shows it too small or too large lands there; the
    non-knee views' most knee-like answers lie further out (docs/real_knees.md)."""
    if limit is None or margin <= 0:
        return []
    out: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: c.shape_distance):
        if (limit < c.shape_distance <= limit + margin and not at_same_place(c, swept, mm_per_px, same_place_mm)
                and not at_same_place(c, out, mm_per_px, same_place_mm)):
            out.append(c)
    return out


def eased_partners(knee: Candidate, candidates: Sequence[Candidate], other: str, limit: float | None, margin: float,
                   width_px: int, mm_per_px: float, same_knee_mm: float) -> list[Candidate]:
    """The partner search's answers that may be the ``other`` knee of ``knee``'s bilateral film although their
    shape misses ``limit`` by at most ``margin``, most knee-like first: seen as the ``other`` side's knee on that
    side's half of the image, not on ``knee`` (centres ``same_knee_mm`` apart), and of a size within
    :data:`PARTNER_SIZE_RATIO` of ``knee``'s.

    The partner search only looks at ``knee``'s height, on the other half, at its zoom: an answer there that is
    nearly a knee's shape is far more likely the other knee than anything else — a knee replacement or a
    severe-OA knee the landmark model did not learn — while on a film without any knee-shaped answer (a lateral
    view, a foot) nothing is eased."""
    if limit is None or margin <= 0:
        return []
    size = knee_size_mm(knee.landmarks_px)  # pixels: only the ratio counts, the same pixels for both knees
    out = []
    for c in candidates:
        if (c.source != "partner" or c.orientation != other or not limit < c.shape_distance <= limit + margin
                or orientation_at(c.centre[0], width_px) != other
                or np.linalg.norm(c.centre - knee.centre) * mm_per_px < same_knee_mm):
            continue
        ratio = knee_size_mm(c.landmarks_px) / size
        if 1 / PARTNER_SIZE_RATIO <= ratio <= PARTNER_SIZE_RATIO:
            out.append(c)
    return sorted(out, key=knee_rank)
