"""The two-stage KNEEL pipeline (method.md §2): radiograph → knee centres → 16 landmarks per knee → refinement.

One API for every face (CLI, bundle, Slicer, MONAI Label)::

    predictor = KneelPredictor(roi_model_dir, landmark_model_dir, device="cpu")
    result = predictor.predict_file("knee.dcm")          # RadiographResult
    result.knees["R"].landmarks_px                         # (16, 2) (x, y) original pixels

Geometry is the transforms' (:mod:`kneel_monai.transforms`): every crop/resample keeps the image
affine exact, so network coordinates map back to the radiograph through two affines.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from .detection import (
    Candidate,
    ScanSettings,
    at_same_place,
    distinct_knees,
    eased_partners,
    grid_starts,
    header_view,
    knee_rank,
    local_starts,
    mirrored_display,
    near_misses,
    off_centre_side,
    orientation_at,
    partner_searched,
    room_for_partner,
    size_zoom,
    zoomed,
)
from .image import AffineImage
from .io.reading import read_image
from .landmarks import KNEE_CENTRE_ID, SIDES
from .measurements import knee_measurements
from .model_io import KneelModel, ModelFormatError, load_model
from .networks import prepare_for_inference
from .quality import QualityThresholds, assess_knee
from .results import KneeResult, RadiographResult
from .shape_plausibility import shape_distance
from .side import decide_side, fibula_evidence
from .transforms import functional as KF
from .transforms.functional import pixel_spacing
from .transforms.points import points_between, points_to_mm

if TYPE_CHECKING:  # annotations only: inference runs without importing MONAI (kneel_monai.image says why)
    from monai.data import MetaTensor

    Image = MetaTensor | AffineImage

__all__ = ["KneeResult", "RadiographResult", "KneelPredictor", "heatmap_confidence", "resolve_device",
           "default_model_dirs", "resolve_model_dirs"]


def _checked_side(side: str | None) -> str | None:
    if side not in (None, *SIDES):
        raise ValueError(f"single_knee_side must be 'R', 'L' or None, got {side!r}")
    return side


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; asking for CUDA without one is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but no CUDA GPU is available to torch")
    return torch.device(device)


def heatmap_confidence(heatmaps: torch.Tensor, coords: torch.Tensor, beta: float = 1.0,
                       radius: int = 1) -> torch.Tensor:
    """Per-landmark confidence: the softmax probability mass within ``radius`` heat-map pixels of the prediction.

    ``heatmaps`` ``(B, M, h, w)`` logits, ``coords`` ``(B, M, 2)`` normalised → ``(B, M)`` in [0, 1]:
    near 1 for a sharp, single peak where the point was placed; small when the map is diffuse
    or multi-modal (no knee, or an ambiguous one).
    """
    b, m, h, w = heatmaps.shape
    prob = torch.softmax(heatmaps.reshape(b, m, -1).float() * beta, dim=-1).reshape(b, m, h, w)
    cx = (coords[..., 0] * w).floor().long().clamp(0, w - 1)
    cy = (coords[..., 1] * h).floor().long().clamp(0, h - 1)
    ys = torch.arange(h, device=heatmaps.device).view(1, 1, h, 1)
    xs = torch.arange(w, device=heatmaps.device).view(1, 1, 1, w)
    window = ((ys - cy[..., None, None]).abs() <= radius) & ((xs - cx[..., None, None]).abs() <= radius)
    return (prob * window).sum(dim=(-2, -1)).clamp(0, 1)


@dataclass
class Stage1Model:
    """An ROI model ready to run: its (prepared) networks and its input's equalisation, if its file asks for one."""

    model: KneelModel
    nets: list
    local_contrast: Callable | None


class KneelPredictor:
    """Two-stage landmark localisation with refinement, on any radiograph the reader accepts.

    Args:
        roi_model, landmark_model: :class:`KneelModel` or model directories.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        refine: re-centre each ROI on the predicted landmark 4 and run stage 2 again (method.md §2.5).
        min_confidence: a knee whose mean landmark confidence is below this is reported absent. The
            default 0.25 sits well below every real knee of the OAI crop set's validation part
            (lowest 0.41) so that knees imaged unlike OAI's still count; the shape limit
            (``scan.knee_shape_limit``) does most of the refusing.
        fast: fold conv-BN and use channels-last (exact; see ``prepare_for_inference``).
        ensemble: average every fold network of each model directory (method.md §2.7); ``False`` uses
            the first fold only (faster; the same for single-fold models such as the shipped ones).
        mc_samples: with ``n > 1``, ``n`` extra passes of the final landmark stage with dropout
            active give each landmark's spread in mm (``KneeResult.spread_mm``; epistemic
            uncertainty). 0 (default) skips them.
        quality: the thresholds of the per-knee quality flag.
        scan: which answers are believed to be knees, and how the image is scanned when stage 1's
            proposals do not give two (:class:`~kneel_monai.detection.ScanSettings`).
        single_knee_side: ``"R"``/``"L"``: the side of a lone knee when neither its DICOM laterality
            nor its anatomy decides; ``None`` leaves it to the anatomy (flagged ``check``).
    """

    def __init__(self, roi_model: KneelModel | str | os.PathLike, landmark_model: KneelModel | str | os.PathLike,
                 device: str = "auto", refine: bool = True, min_confidence: float = 0.25, fast: bool = True,
                 ensemble: bool = True, mc_samples: int = 0, quality: QualityThresholds = QualityThresholds(),
                 scan: ScanSettings = ScanSettings(), single_knee_side: str | None = None) -> None:
        if not 0.0 <= float(min_confidence) <= 1.0:  # NaN fails too: it would switch absence off
            raise ValueError(f"min_confidence must be a number from 0 to 1, got {min_confidence}")
        self.device = resolve_device(device)
        self.scan, self.single_knee_side = scan, _checked_side(single_knee_side)
        folds = None if ensemble else [0]
        self.roi = roi_model if isinstance(roi_model, KneelModel) else load_model(roi_model, self.device, folds)
        self.landmarks = landmark_model if isinstance(landmark_model, KneelModel) else load_model(
            landmark_model, self.device, folds)
        if mc_samples < 0 or mc_samples == 1:
            raise ValueError(f"mc_samples must be 0 (off) or at least 2, got {mc_samples}")
        self.mc_samples, self.quality = int(mc_samples), quality
        if self.roi.task != "roi" or self.landmarks.task != "landmarks":
            raise ValueError(f"expected an 'roi' and a 'landmarks' model, got {self.roi.task!r} and "
                             f"{self.landmarks.task!r}")
        self.refine, self.min_confidence = refine, float(min_confidence)
        prep = (lambda n: prepare_for_inference(n).to(self.device)) if fast else (lambda n: n.to(self.device).eval())
        used = slice(None) if ensemble else slice(0, 1)
        self._lm_nets = [prep(n) for n in self.landmarks.networks[used]]
        lp = self.landmarks.preprocessing
        # each step as the models' model.json declare it (the functions the training chains' transforms call)
        spacing = float(lp["spacing_mm"])
        self._roi_crop = partial(KF.crop_roi, size_px=KF.roi_size_px(float(lp.get("roi_size_mm", 140.0)), spacing),
                                 spacing_mm=spacing)
        # the [0, 1] scaling both models were trained with
        self.intensity_percentiles = KF.percentile_limits(lp.get("intensity"))
        for roi in filter(None, (self.roi, self.roi.fallback)):
            roi_percentiles = KF.percentile_limits(roi.preprocessing.get("intensity"))
            if roi_percentiles != self.intensity_percentiles:
                raise ValueError(f"the ROI model {roi.path or ''} scales intensities to percentiles {roi_percentiles} "
                                 f"but the landmark model to {self.intensity_percentiles}; one radiograph is "
                                 "normalised once for both stages")
        lower, upper = self.intensity_percentiles
        self._normalise = partial(KF.percentile_normalise, lower=lower, upper=upper)
        # each knee ROI to its own percentiles too (intensity region "roi"); a ROI may be all background
        roi_limits = KF.roi_percentile_limits(lp.get("intensity"))
        self._roi_scaling = (None if roi_limits is None else partial(
            KF.percentile_normalise, lower=roi_limits[0], upper=roi_limits[1], constant_ok=True))
        self._local_contrast = self._clahe(lp.get("local_contrast"))
        # stage 1: the ROI model, and the one its model file names as its fallback (tried when its proposals give
        # no knee; all of the fallback's folds are used only with ensemble)
        def stage1(model: KneelModel) -> Stage1Model:
            return Stage1Model(model, [prep(n) for n in model.networks[used]],
                               self._clahe(model.preprocessing.get("local_contrast")))

        self._stage1_model = stage1(self.roi)
        self._fallback_stage1 = None if self.roi.fallback is None else stage1(self.roi.fallback)

    @staticmethod
    def _clahe(spec: dict | None):
        settings = KF.local_contrast_settings(spec)
        return None if settings is None else partial(KF.local_contrast, **settings)

    # ---- network input and output
    @torch.inference_mode()
    def _run(self, nets: list, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Fold-averaged coordinates (B, M, 2) normalised and confidences (B, M)."""
        coords, confidences = [], []
        for net in nets:
            c, hm = net.forward_with_heatmaps(x)
            coords.append(c)
            confidences.append(heatmap_confidence(hm, c, net.soft_argmax.beta))
        return (torch.stack(coords).mean(0).double().cpu().numpy(), torch.stack(confidences).mean(0).cpu().numpy())

    def _pad_crop(self, img: Image, model: KneelModel) -> Image:
        pre = model.preprocessing
        return KF.pad_and_centre_crop(img, int(pre["pad_size"]), int(pre["crop_size"]))

    def _to_original(self, coords: np.ndarray, crop: Image, original: Image, offset: float) -> np.ndarray:
        h, w = crop.shape[-2:]
        px = coords * np.array([w, h]) - offset
        return points_between(px, crop.affine, original.affine)

    # ---- the pipeline
    def _stage1_inputs(self, image: Image, whole: bool, stage1: Stage1Model | None = None) -> list[Image]:
        """What an ROI model (default the predictor's) reads of ``image``: resampled to its spacing (equalised when
        its model file says), split into halves or ``whole``, padded and cropped."""
        stage1 = stage1 or self._stage1_model
        low = KF.resample_to_spacing(image, float(stage1.model.preprocessing["spacing_mm"]))
        if stage1.local_contrast is not None:  # on the whole resampled image, before halving, as in training
            low = stage1.local_contrast(low)
        return [self._pad_crop(part, stage1.model) for part in ([low] if whole else KF.split_halves(low))]

    def _stage1(self, image: Image, whole: bool, stage1: Stage1Model | None = None
                ) -> tuple[list[np.ndarray], list[float]]:
        """Stage 1 on ``image`` at the ROI model's spacing, split into halves or ``whole``: each input's knee
        centre (original pixels) and its confidence."""
        stage1 = stage1 or self._stage1_model
        inputs = self._stage1_inputs(image, whole, stage1)
        coords, conf = self._run(stage1.nets, stage1.model.network_input(inputs, self.device))
        return ([self._to_original(coords[i], x, image, stage1.model.pixel_offset)[0] for i, x in enumerate(inputs)],
                [float(c) for c in conf[:, 0]])

    def knee_centres(self, image: Image) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Stage 1: the knee-joint centre of each image half, original pixels, and its confidence."""
        centres, confidence = self._stage1(image, whole=False)
        return dict(zip(SIDES, centres)), dict(zip(SIDES, confidence))

    def whole_image_centre(self, image: Image, stage1: Stage1Model | None = None) -> np.ndarray:
        """Stage 1 on the whole image as one input, not halves: the centre of a knee alone in the field
        (original pixels). Each half of a single-knee image holds half a knee, and their centres are off it."""
        return self._stage1(image, whole=True, stage1=stage1)[0][0]

    def _landmark_crops(self, image: Image, centres: dict[str, np.ndarray] | list[tuple[str, np.ndarray]]
                        ) -> list[Image]:
        starts = list(centres.items()) if isinstance(centres, dict) else centres
        crops = [self._roi_crop(image, c, mirror=s == "L") for s, c in starts]
        if self._roi_scaling is not None:  # each ROI to its own percentiles, then CLAHE, as in training
            crops = [self._roi_scaling(c) for c in crops]
        if self._local_contrast is not None:  # on the ROI, before padding, as in training
            crops = [self._local_contrast(c) for c in crops]
        return [self._pad_crop(c, self.landmarks) for c in crops]

    def _stage2(self, image: Image, starts: list[tuple[str, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Stage 2 for each ``(side, centre)`` in one batch: ``[(landmarks (16, 2) original px, confidence (16,))]``."""
        crops = self._landmark_crops(image, starts)
        coords, conf = self._run(self._lm_nets, self.landmarks.network_input(crops, self.device))
        offset = self.landmarks.pixel_offset
        return [(self._to_original(coords[i], crops[i], image, offset), conf[i]) for i in range(len(starts))]

    def knee_landmarks(self, image: Image, centres: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray,
                                                                                                   np.ndarray]]:
        """Stage 2 around the given centres: ``{side: (landmarks (16, 2) original px, confidence (16,))}``."""
        return dict(zip(centres, self._stage2(image, list(centres.items()))))

    def refined_landmarks(self, image: Image, starts: list[tuple[str, np.ndarray]], refine: bool | None = None
                          ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Stage 2 from each ``(side, centre)``, then (``refine``, default the predictor's) again around each
        answer's landmark 4, all in batches: ``[(landmarks (16, 2) original px, confidence (16,))]``.
        ``image`` is normalised (as :meth:`predict_image` does)."""
        answers = self._stage2(image, starts)
        if self.refine if refine is None else refine:
            answers = self._stage2(image, [(s, pts[KNEE_CENTRE_ID]) for (s, _), (pts, _) in zip(starts, answers)])
        return answers

    @torch.inference_mode()
    def landmark_spread(self, image: Image, centres: dict[str, np.ndarray], samples: int) -> dict[str, np.ndarray]:
        """MC-dropout: ``samples`` stage-2 passes with dropout on → per-landmark spread in mm ``{side: (16,)}``.

        The spread is the root-mean-square distance of the sampled landmarks to their mean, in the
        radiograph's millimetres; BatchNorm stays in eval mode.
        """
        crops = self._landmark_crops(image, centres)
        x = self.landmarks.network_input(crops, self.device)
        offset = self.landmarks.pixel_offset
        draws = []
        for n in range(samples):
            net = self._lm_nets[n % len(self._lm_nets)]
            dropouts = [m for m in net.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
            for m in dropouts:
                m.train()
            try:
                coords = net(x).double().cpu().numpy()
            finally:
                for m in dropouts:
                    m.eval()
            draws.append([points_to_mm(self._to_original(coords[i], crops[i], image, offset), image.affine)
                          for i in range(len(crops))])
        pts = np.asarray(draws)  # (samples, knees, 16, 2)
        rms = np.sqrt(((pts - pts.mean(0)) ** 2).sum(-1).mean(0))  # (knees, 16)
        return {s: rms[i] for i, s in enumerate(centres)}

    # ---- detection (see kneel_monai.detection)
    def working_image(self, norm: Image) -> Image:
        """The normalised radiograph stage 2 reads: shrunk with anti-aliasing to the landmark model's
        spacing when its pixels are much finer (a 0.1 mm film read straight at 0.6 mm would alias its
        noise into the ROI), else as it is. Its affine is exact, so points map back to the original."""
        target = float(self.landmarks.preprocessing["spacing_mm"])
        if min(pixel_spacing(norm.affine)) < target / 1.25:
            return KF.resample_to_spacing(norm, target)
        return norm

    def _candidates(self, work: Image, starts: list[tuple[str, np.ndarray, float]], source: str,
                    refine: bool | None = None) -> list[Candidate]:
        """Stage 2 (and refinement) from ``(orientation, centre px, zoom)`` starts, one batch per zoom."""
        out: list[Candidate | None] = [None] * len(starts)
        for zoom in sorted({z for _, _, z in starts}):
            index = [i for i, (_, _, z) in enumerate(starts) if z == zoom]
            answers = self.refined_landmarks(zoomed(work, zoom), [starts[i][:2] for i in index], refine)
            for i, (pts, conf) in zip(index, answers):
                side = starts[i][0]
                out[i] = Candidate(side, pts, conf, shape_distance(points_to_mm(pts, work.affine), side), zoom, source)
        return out  # type: ignore[return-value]

    def _believed(self, c: Candidate, work: Image, limit: float | None = None, least: float | None = None) -> bool:
        """Whether an answer is a knee: inside the image, its mean confidence at least ``least`` (default
        ``min_confidence``), its shape within ``limit`` (default ``scan.knee_shape_limit``)."""
        h, w = work.shape[-2:]
        pts = c.landmarks_px
        inside = bool((pts[:, 0] > -0.5).all() and (pts[:, 0] < w - 0.5).all() and (pts[:, 1] > -0.5).all()
                      and (pts[:, 1] < h - 0.5).all())
        limit = self.scan.knee_shape_limit if limit is None else limit
        least = self.min_confidence if least is None else least
        return inside and c.mean_confidence >= least and (limit is None or c.shape_distance <= limit)

    def _resized(self, work: Image, candidates: list[Candidate]) -> list[Candidate]:
        """Each answer re-zoomed by its own size (``scan.size_rounds`` times at most): stage 2 again at the
        zoom that shows the knee at the annotated knees' mean size, kept when its shape is as knee-like."""
        out = list(candidates)
        active = [np.isfinite(c.shape_distance) for c in out]
        for _ in range(self.scan.size_rounds):
            todo = []
            for i, c in enumerate(out):
                zoom = round(size_zoom(points_to_mm(c.landmarks_px, work.affine), self.scan.zoom_range), 3)
                if active[i] and abs(zoom / c.zoom - 1) >= 0.05:
                    todo.append((i, zoom))
            if not todo:
                break
            again = self._candidates(work, [(out[i].orientation, out[i].centre, z) for i, z in todo], "")
            for (i, _), a in zip(todo, again):
                if a.shape_distance <= out[i].shape_distance:
                    a.source, out[i] = out[i].source, a
                else:
                    active[i] = False
        return out

    def _as_sides(self, work: Image, starts: list[tuple[str, np.ndarray, float]]) -> list[Candidate]:
        """Stage 2 (refined, re-zoomed) from ``(side, centre, zoom)``: a knee's answer in its side's orientation."""
        return self._resized(work, self._candidates(work, starts, "side"))

    def _proposals(self, norm: Image, work: Image, centres: dict[str, np.ndarray]) -> list[Candidate]:
        """From stage 1's ``centres`` of the image halves (``norm`` pixels), stage 2 at every
        ``scan.proposal_zooms``: the most knee-like answer per half, re-zoomed by its size."""
        places = [(s, points_between(centres[s][None], norm.affine, work.affine)[0]) for s in SIDES]
        return self._best_zoom(work, places, self.scan.proposal_zooms, "stage1")

    def _best_zoom(self, work: Image, places: list[tuple[str, np.ndarray]], zooms: Sequence[float], source: str
                   ) -> list[Candidate]:
        """Stage 2 (refined) from each ``(orientation, centre)`` at every zoom of ``zooms``: each place's most
        knee-like answer, re-zoomed by its size."""
        tried = self._candidates(work, [(o, xy, z) for o, xy in places for z in zooms], source)
        n = len(zooms)
        return self._resized(work, [min(tried[i * n:(i + 1) * n], key=knee_rank) for i in range(len(places))])

    def _whole_image_proposal(self, norm: Image, work: Image, stage1: Stage1Model | None = None) -> Candidate:
        """Stage 2 from the whole-image stage-1 centre in both orientations (a lone knee's side is not known
        yet) at every ``scan.proposal_zooms``: the most knee-like answer, re-zoomed by its size."""
        centre = points_between(self.whole_image_centre(norm, stage1)[None], norm.affine, work.affine)[0]
        tried = self._candidates(work, [(s, centre, z) for s in SIDES for z in self.scan.proposal_zooms], "whole")
        return self._resized(work, [min(tried, key=knee_rank)])[0]

    def _most_knee_like(self, work: Image, starts: list[tuple[str, np.ndarray, float]], source: str,
                        keep: int | None = None) -> list[Candidate]:
        """Stage 2 (unrefined) from every start; the ``keep`` (default ``scan.keep``) most knee-like answers at
        distinct places (per orientation) re-centred — kept only where that does not worsen the shape — and
        re-zoomed."""
        first = self._candidates(work, starts, source, refine=False)
        mm = pixel_spacing(work.affine)[1]
        best: list[Candidate] = []
        for c in sorted(first, key=lambda c: c.shape_distance):
            if len(best) == (keep or self.scan.keep) or not np.isfinite(c.shape_distance):
                break
            if not at_same_place(c, best, mm):
                best.append(c)
        if not best or not self.refine:
            return best
        again = self._candidates(work, [(c.orientation, c.centre, c.zoom) for c in best], source, refine=False)
        return self._resized(work, [r if r.shape_distance <= c.shape_distance else c for c, r in zip(best, again)])

    def _at_every_zoom(self, work: Image, answers: list[Candidate]) -> tuple[list[Candidate], int]:
        """Stage 2 (refined) from each answer's centre and orientation at every zoom the search uses (the scan's
        and the proposals'): each one's most knee-like answer, re-zoomed by its size; and how many starts."""
        zooms = sorted(set(self.scan.zooms) | set(self.scan.proposal_zooms))
        best = self._best_zoom(work, [(c.orientation, c.centre) for c in answers], zooms, "")
        for b, c in zip(best, answers):
            b.source = c.source
        return best, len(answers) * len(zooms)

    def _scan(self, work: Image) -> tuple[list[Candidate], int]:
        """Stage 2 from a grid at every ``scan.zooms`` (orientation by image half). Returns the most
        knee-like answers (see :meth:`_most_knee_like`) and how many starts were tried."""
        w = work.shape[-1]
        starts = [(orientation_at(c[0], w), c, zoom) for zoom in self.scan.zooms
                  for c in grid_starts(zoomed(work, zoom), self.scan.stride_mm)]
        return self._most_knee_like(work, starts, "scan"), len(starts)

    def _local(self, work: Image, proposals: list[Candidate]) -> tuple[list[Candidate], int]:
        """Stage 2 on a small grid around each proposal, at its zoom and orientation (``scan.local_*``):
        the two most knee-like answers re-centred and re-zoomed (see :meth:`_most_knee_like`); refining six, as
        the scan does, found no more on the development films and cost about 0.4 s more a film."""
        starts = [(c.orientation, xy, c.zoom) for c in proposals if np.isfinite(c.centre).all()
                  for xy in local_starts(zoomed(work, c.zoom), c.centre, self.scan.local_stride_mm,
                                         self.scan.local_steps)]
        return (self._most_knee_like(work, starts, "local", keep=len(SIDES)) if starts else []), len(starts)

    def _partner(self, work: Image, knee: Candidate, side: str) -> tuple[list[Candidate], int]:
        """The other knee of a bilateral film whose ``side`` knee was found: stage 2 on a finer grid over
        the other half, within 80 mm of the found knee's height, at the found knee's zoom (both knees of
        a film share its scale)."""
        w = work.shape[-1]
        other = "L" if side == "R" else "R"
        at = zoomed(work, knee.zoom)
        mm = pixel_spacing(at.affine)[0]
        starts = [(other, c, knee.zoom) for c in grid_starts(at, self.scan.other_knee_stride_mm)
                  if orientation_at(c[0], w) == other and abs(c[1] - knee.centre[1]) * mm <= 80.0]
        return (self._most_knee_like(work, starts, "partner") if starts else []), len(starts)

    def detect_knees(self, norm: Image, work: Image | None = None, single_knee_side: str | None = None
                     ) -> tuple[dict[str, Candidate], dict[str, str], dict[str, Any]]:
        """The knees of a normalised radiograph: ``({side: Candidate}, {side: side_source}, detection info)``.
        Points are pixels of ``work`` (``working_image(norm)`` by default)."""
        work = self.working_image(norm) if work is None else work
        w = work.shape[-1]
        centres, _ = self.knee_centres(norm)
        candidates = self._proposals(norm, work, centres)
        mm = pixel_spacing(work.affine)[1]

        swept: list[Candidate] = []  # answers near the shape limit already tried at every zoom

        def believe() -> list[Candidate]:
            near = near_misses(candidates, self.scan.knee_shape_limit, self.scan.near_miss_margin, swept, mm)
            if near:  # a knee judged at the wrong zoom misses the limit: judge it at its best one first
                swept.extend(near)
                again, n = self._at_every_zoom(work, near)
                candidates.extend(again)
                info["sweep_starts"] += n
            return distinct_knees([c for c in candidates if self._believed(c, work)], mm, self.scan.same_knee_mm)

        info = _nothing_searched()
        # where stage 1 looked, in the radiograph's pixels: how far it was from the knees found says how it did
        info["stage1_px"] = {side: [round(float(v), 1) for v in c] for side, c in centres.items()}
        searched: list[Candidate] = []  # lone knees whose partner was looked for

        def look_for_partner(knees: list[Candidate]) -> list[Candidate]:
            side = off_centre_side(knees[0].centre[0], w, self.scan.centred_fraction) if len(knees) == 1 else None
            if side is None or partner_searched(knees[0], searched, mm, self.scan.same_knee_mm):
                return knees
            searched.append(knees[0])
            found, n = self._partner(work, knees[0], side)
            candidates.extend(found)
            info["partner_starts"] += n
            return believe()

        believed = look_for_partner(believe())
        if not believed and self.scan.whole_image:  # one knee in the middle of the field: no half holds it
            candidates.append(self._whole_image_proposal(norm, work))
            info["whole_image"] = True
            believed = look_for_partner(believe())
        fallback = self._fallback_stage1
        if not believed and fallback is not None and self.scan.fallback_roi:  # a second stage-1 model's proposals
            fallback_centres = dict(zip(SIDES, self._stage1(norm, whole=False, stage1=fallback)[0]))
            info["fallback_stage1_px"] = {side: [round(float(v), 1) for v in c] for side, c in fallback_centres.items()}
            candidates += self._proposals(norm, work, fallback_centres)
            believed = look_for_partner(believe())
            if not believed and self.scan.whole_image:
                candidates.append(self._whole_image_proposal(norm, work, fallback))
                believed = look_for_partner(believe())
        if not believed and self.scan.local_steps:  # stage 1 near the knees but not on them: look around first
            local, n = self._local(work, list(candidates))
            candidates += local
            info["local_starts"] = n
            believed = look_for_partner(believe())
        # a lone knee with no room beside it for another (a single-knee field) needs no scan for a second one
        if len(believed) < 2 and self.scan.scan and (not believed or room_for_partner(believed[0], w,
                                                                                      self.scan.partner_room)):
            scanned, n = self._scan(work)
            candidates += scanned
            info.update(scanned=True, scan_starts=n)
            believed = look_for_partner(believe())
        eased = self._eased_partner(work, believed, candidates)
        believed = sorted(believed[:2] + ([eased] if eased else []), key=lambda c: c.centre[0])  # image left first
        info["best_shape_distance"] = min((c.shape_distance for c in candidates), default=float("inf"))
        if len(believed) == 2:
            knees, sources = dict(zip(SIDES, believed)), {s: "image_position" for s in SIDES}
        elif len(believed) == 1:
            side, source, knee, evidence = self._single_knee_side(work, believed[0], norm.meta.get("laterality"),
                                                                  single_knee_side)
            knees, sources = {side: knee}, {side: source}
            info["side_evidence"] = evidence
        else:
            knees, sources = {}, {}
        info["eased_partner"] = next((s for s, k in knees.items() if k is eased), None) if eased else None
        # a knee seen in the other orientation than its side is run again as that side's knee
        redo = [(s, k.centre, k.zoom) for s, k in knees.items() if k.orientation != s]
        for (s, _, _), again in zip(redo, self._as_sides(work, redo)):
            knees[s] = again
        return knees, sources, info

    def _eased_partner(self, work: Image, believed: list[Candidate], candidates: list[Candidate]) -> Candidate | None:
        """The other knee of a bilateral film of which only one knee is believed, with the shape limit eased by
        ``scan.partner_margin`` (:func:`~kneel_monai.detection.eased_partners`); None when there is none."""
        if len(believed) != 1:
            return None
        limit, margin = self.scan.knee_shape_limit, self.scan.partner_margin
        w = work.shape[-1]
        side = off_centre_side(believed[0].centre[0], w, self.scan.centred_fraction)
        if side is None:  # a knee in the middle of the field: no partner was looked for
            return None
        other = "L" if side == "R" else "R"
        eased = eased_partners(believed[0], candidates, other, limit, margin, w, pixel_spacing(work.affine)[1],
                               self.scan.same_knee_mm)
        least = self.scan.partner_min_confidence
        return next((c for c in eased if self._believed(c, work, limit + margin, least)), None)

    def _position_side(self, work: Image, knee: Candidate) -> str | None:
        """The side a lone knee's place says: one knee of a bilateral film off the image's middle (more than
        ``scan.centred_fraction`` of the width) is on its side's half; None when it is near the middle, or when the
        image has no room beside it for a second knee (``scan.partner_room``): a single-knee field, wherever
        the knee lies in it."""
        w = work.shape[-1]
        position = off_centre_side(knee.centre[0], w, self.scan.centred_fraction)
        return position if position is not None and room_for_partner(knee, w, self.scan.partner_room) else None

    def _single_knee_side(self, work: Image, knee: Candidate, laterality: Any, user_side: str | None
                          ) -> tuple[str, str, Candidate, dict[str, Any] | None]:
        """``(side, side_source, answer in that side's orientation, evidence)`` for the only knee of an image.

        The side: the DICOM laterality tag; else where the knee lies (:meth:`_position_side`) unless its anatomy,
        sure, says the other side; else the anatomy when sure; else the user's side; else the anatomy's guess,
        uncertain. The evidence (None when the tag decides): the anatomy's decision and ``position``, what the
        knee's place says (None: near the middle, or no room for a second knee). Stage 2 runs in both
        orientations unless the tag decides."""
        def answers(*sides: str) -> tuple[dict[str, Candidate], dict[str, Candidate]]:
            again = dict(zip(sides, self._as_sides(work, [(s, knee.centre, knee.zoom) for s in sides])))
            # the answer found stays where running it again in its own orientation gives a less knee-like one
            # (it was picked from many starts, so it is not compared with the other orientation's one run)
            best = {s: knee if s == knee.orientation and knee.shape_distance < a.shape_distance else a
                    for s, a in again.items()}
            return best, again

        tag = str(laterality or "").strip().upper()
        if tag in SIDES:
            return tag, "dicom_laterality", answers(tag)[0][tag], None
        position = self._position_side(work, knee)
        best, again = answers(*SIDES)
        confidence = {s: a.mean_confidence for s, a in again.items()}
        surer = max(SIDES, key=lambda s: confidence[s])
        fibula = fibula_evidence(np.asarray(work), again[surer].landmarks_px)
        guess = "R" if fibula is not None and fibula > 0 else "L" if fibula is not None else surer
        decision = decide_side(confidence, fibula, self.scan.fibula_margin, self.scan.side_margin,
                               landmarks_ok=self._landmarks_ok(work, best[guess]))
        evidence = {**decision.as_json(), "position": position}
        if position is not None and not (decision.sure and decision.side != position):
            return position, "image_position", best[position], evidence  # one knee of a bilateral film
        if decision.sure:  # (off-centre on a wide film, the anatomy saying the other side: a knee alone, shifted)
            return decision.side, "anatomy", best[decision.side], evidence
        if user_side is not None:
            return user_side, "user", best[user_side], evidence
        return decision.side, "anatomy_uncertain", best[decision.side], evidence

    def _assess(self, knee: Candidate, landmarks_mm: np.ndarray, spread_mm: np.ndarray | None = None
                ) -> tuple[dict[str, float], str, list[str]]:
        """``(measurements, quality, reasons)`` of a knee with its landmarks in millimetres."""
        measured = knee_measurements(landmarks_mm)
        quality, reasons = assess_knee(knee.confidence, measured, spread_mm, self.quality, knee.shape_distance)
        return measured, quality, reasons

    def _landmarks_ok(self, work: Image, knee: Candidate) -> bool:
        """Whether a knee's landmarks pass the quality check (before any MC-dropout spread is known)."""
        return self._assess(knee, points_to_mm(knee.landmarks_px, work.affine))[1] == "ok"

    def predict_image(self, image: Image, path: str = "", single_knee_side: str | None = None) -> RadiographResult:
        """The knees of a radiograph already read (``read_radiograph``'s ``MetaTensor``, or ``read_image``'s
        :class:`~kneel_monai.image.AffineImage`: the same answer).

        ``single_knee_side`` (``"R"``/``"L"``): the side of a lone knee when neither its DICOM
        laterality nor its anatomy decides (see :mod:`kneel_monai.detection`); default the predictor's.
        """
        single_knee_side = _checked_side(single_knee_side or self.single_knee_side)
        t0 = time.perf_counter()
        image = AffineImage.of(image)  # one kind inside, whichever came in
        pixels = image.as_tensor()
        view_position = image.meta.get("view_position") or None  # the reader writes "" for "no such tag"
        if float(pixels.max()) == float(pixels.min()):  # nothing to see, not a broken file: report why
            reason = f"blank image (every pixel is {float(pixels.min()):g}): no knee"
            return _result(image, path, {s: KneeResult(s, False, reason=reason) for s in SIDES},
                           {"verdict": "no_ap_knee", "knees": 0, "reason": reason, "view_position": view_position},
                           {**_nothing_searched(), "best_shape_distance": None})
        header_says = header_view(view_position) if self.scan.header_view_check else None
        if header_says is not None:  # no model can make a lateral film an AP one
            reason = (f"the DICOM header says a {header_says} view (ViewPosition {view_position}), not an AP/PA "
                      "knee view: no knee looked for")
            return _result(image, path, {s: KneeResult(s, False, reason=reason) for s in SIDES},
                           {"verdict": "no_ap_knee", "knees": 0, "reason": reason, "view_position": view_position},
                           {**_nothing_searched(), "best_shape_distance": None,
                            "header_view_check": True})
        if self.scan.follow_patient_orientation and mirrored_display(image.meta.get("patient_orientation")):
            return self._predict_mirrored(image, path, single_knee_side)
        norm = self._normalise(image)
        work = self.working_image(norm)
        t1 = time.perf_counter()
        found, sources, info = self.detect_knees(norm, work, single_knee_side)
        t2 = time.perf_counter()
        spread: dict[str, np.ndarray] = {}
        if self.mc_samples:
            for side, k in found.items():
                spread.update(self.landmark_spread(zoomed(work, k.zoom), {side: k.centre}, self.mc_samples))
        t3 = time.perf_counter()
        knees = {}
        limit = self.scan.knee_shape_limit
        for side in SIDES:
            k = found.get(side)
            if k is None:
                if found:
                    why = "one knee in the image" if len(found) == 1 else "not found"
                    reason = f"no knee found on this side ({why})"
                else:
                    best = info["best_shape_distance"]
                    reason = ("no knee found: no answer with a knee's shape anywhere in the image (most knee-like: "
                              f"shape distance {best:.1f} > {limit}; not an AP knee view, or a knee unlike those "
                              "the model learnt)" if limit is not None and np.isfinite(best) else
                              f"no knee found (mean landmark confidence < {self.min_confidence} or landmarks outside "
                              "the image)")
                knees[side] = KneeResult(side, False, reason=reason, side_source="")
                continue
            pts = points_between(k.landmarks_px, work.affine, image.affine)
            mm = points_to_mm(pts, image.affine)
            measured, quality, reasons = self._assess(k, mm, spread.get(side))
            evidence = info.get("side_evidence") or {}
            position = evidence.get("position")
            if sources[side] == "anatomy" and position not in (None, side):
                quality = "check"
                reasons = reasons + [f"side from the anatomy, sure, against where the knee lies (the image's "
                                     f"{'left' if position == 'R' else 'right'}, where a bilateral film holds the "
                                     f"{'right' if position == 'R' else 'left'} knee): a single knee off-centre in its "
                                     "field, or a film shown mirrored — check the side"]
            if sources[side] == "anatomy_uncertain":
                quality = "check"
                why = evidence.get("why") or "the anatomy does not say left or right"
                reasons = reasons + [f"side uncertain: {why}; give the side (single_knee_side) or check it"]
            if side == info.get("eased_partner"):
                quality = "check"
                reasons = reasons + [f"found as the other knee of a bilateral film, with a shape less like a knee's "
                                     f"than a knee found alone must have (shape distance {k.shape_distance:.1f} > "
                                     f"{limit}): an implant, severe OA or a knee the model did not learn — check it"]
            knees[side] = KneeResult(side, True, pts, mm, k.confidence, pts[KNEE_CENTRE_ID].copy(),
                                     measurements=measured, quality=quality, quality_reasons=reasons,
                                     spread_mm=spread.get(side), shape_distance=k.shape_distance,
                                     side_source=sources[side], roi_zoom=k.zoom)
        n = sum(k.present for k in knees.values())
        view = ({"verdict": "ap_knee", "knees": n, "reason": ""} if n else
                {"verdict": "no_ap_knee", "knees": 0,
                 "reason": "no knee-shaped set of landmarks anywhere in the image (lateral view, foot, long-leg "
                           "film, no knee, or a knee the model does not recognise)"})
        view["view_position"] = view_position  # what the DICOM header says (None: no such tag, or not a DICOM)
        detection = {"refined": bool(self.refine), "scanned": bool(info["scanned"]),
                     "whole_image": bool(info["whole_image"]), "local_starts": int(info["local_starts"]),
                     "scan_starts": int(info["scan_starts"]),
                     "partner_starts": int(info["partner_starts"]), "sweep_starts": int(info["sweep_starts"]),
                     # the side of a knee believed only as the other knee of a bilateral film (None: no such knee)
                     "eased_partner": info.get("eased_partner"),
                     "stage1_px": info.get("stage1_px"),
                     # the fallback ROI model's centres, when its proposals were tried (None: not needed)
                     "fallback_stage1_px": info.get("fallback_stage1_px"),
                     "mirrored_display": False,
                     # a lone knee's side from its anatomy: the fibula, each orientation's confidence
                     "side_evidence": info.get("side_evidence"),
                     "knee_shape_limit": limit,
                     # the most knee-like answer anywhere: how far a film without a knee was from having one
                     "best_shape_distance": (round(float(info["best_shape_distance"]), 3)
                                             if np.isfinite(info["best_shape_distance"]) else None),
                     "min_confidence": self.min_confidence}
        return _result(image, path, knees, view, detection,
                       {"normalise": t1 - t0, "detect": t2 - t1,
                        **({"mc_dropout": t3 - t2} if self.mc_samples else {})})

    def _predict_mirrored(self, image: AffineImage, path: str, single_knee_side: str | None) -> RadiographResult:
        """A radiograph shown mirrored (its PatientOrientation puts the patient's right on the image's right):
        predicted on its mirror image, which is in the radiological convention, and the points given back in
        the image's own pixels. Sides are the patient's either way; the landmark ids keep their anatomy
        (mirroring the image mirrors the knee with it)."""
        width = image.shape[-1]
        meta = {k: v for k, v in image.meta.items() if k != "patient_orientation"}
        result = self.predict_image(AffineImage(torch.flip(image.as_tensor(), dims=[-1]), image.affine, meta), path,
                                    single_knee_side)

        def back(points: Any) -> Any:
            if points is None:
                return None
            out = np.array(points, dtype=np.float64)
            out[..., 0] = (width - 1) - out[..., 0]
            return out

        for knee in result.knees.values():
            if knee.present:
                knee.landmarks_px, knee.centre_px = back(knee.landmarks_px), back(knee.centre_px)
                knee.landmarks_mm = points_to_mm(knee.landmarks_px, image.affine)
        for key in ("stage1_px", "fallback_stage1_px"):
            stage1 = result.detection.get(key)
            if stage1:
                result.detection[key] = {s: [round(float(back(xy)[0]), 1), xy[1]] for s, xy in stage1.items()}
        result.detection["mirrored_display"] = True
        return result

    def predict_file(self, path: str | os.PathLike, spacing_mm: float | tuple[float, float] | None = None,
                     single_knee_side: str | None = None) -> RadiographResult:
        t0 = time.perf_counter()
        image = read_image(path, spacing_mm)
        read_s = time.perf_counter() - t0
        result = self.predict_image(image, str(path), single_knee_side)
        result.timings_s = {"read": read_s, **result.timings_s}
        return result


def _nothing_searched() -> dict[str, Any]:
    """How a radiograph's knees were looked for, before any search (``detect_knees`` counts from here)."""
    return {"scanned": False, "whole_image": False, "local_starts": 0, "scan_starts": 0, "partner_starts": 0,
            "sweep_starts": 0, "stage1_px": None, "fallback_stage1_px": None, "eased_partner": None}


def _result(image: Image, path: str, knees: dict[str, KneeResult], view: dict[str, Any],
            detection: dict[str, Any], timings_s: dict[str, float] | None = None) -> RadiographResult:
    """A radiograph's result: its knees, with the image's path, size and spacing — the spacing of the pixels the
    landmarks are in, from the affine (the reader's ``meta["pixel_spacing_mm"]`` no longer holds once the image was
    resampled before prediction)."""
    meta = image.meta
    h, w = image.shape[-2:]
    spacing = pixel_spacing(image.affine)
    return RadiographResult(path=path or str(meta.get("filename_or_obj", "")), image_size=(int(h), int(w)),
                            pixel_spacing_mm=spacing, spacing_source=str(meta.get("spacing_source", "")), knees=knees,
                            view=view, detection=detection, timings_s=dict(timings_s or {}))


def default_bundle_dir() -> Path:
    """The MONAI bundle shipped with the package (``kneel_monai/bundle``: the repository's
    ``bundles/kneel_landmarks`` in a checkout, its installed copy after ``pip install``)."""
    return Path(__file__).parent / "bundle"


def default_model_dirs() -> tuple[Path, Path]:
    """The shipped default models: the bundle's ``models/roi`` and ``models/landmarks``."""
    root = default_bundle_dir() / "models"
    return root / "roi", root / "landmarks"


def _model_task(folder: Path) -> str | None:
    """The task a model folder's ``model.json`` names; None when there is no such file. A file that is
    there but broken is said as such (not "no model.json")."""
    import json

    config = folder / "model.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelFormatError(f"{config}: cannot read it as JSON ({err}); a damaged or cut-short model "
                               "file?") from None
    return data.get("task") if isinstance(data, dict) else None


def resolve_model_dirs(model: str | os.PathLike | None = None, roi_model: str | os.PathLike | None = None
                       ) -> tuple[Path, Path]:
    """``(roi_dir, landmark_dir)`` from what a user names as "the model".

    ``model`` may be: ``None`` (the shipped models); a bundle folder (``models/roi`` +
    ``models/landmarks``); a folder holding ``roi/`` + ``landmarks/`` model directories, or
    ``lc/`` + ``hc/`` as ``kneel convert-release`` writes the release's snapshot folder; or one
    model directory — a landmark model (the ROI model then is ``roi_model`` or the shipped
    one) or an ROI model. ``roi_model`` overrides the ROI model in every case.
    """
    default_roi, default_landmarks = default_model_dirs()
    roi, landmarks = default_roi, default_landmarks
    if model is not None:
        folder = Path(model)
        if not folder.is_dir():
            raise ValueError(f"{folder}: model folder not found")
        pairs = [(folder / "models" / "roi", folder / "models" / "landmarks"), (folder / "roi", folder / "landmarks"),
                 (folder / "lc", folder / "hc")]
        pair = next(((r, lm) for r, lm in pairs if _model_task(r) == "roi" and _model_task(lm) == "landmarks"), None)
        task = _model_task(folder)
        if pair is not None:
            roi, landmarks = pair
        elif task == "landmarks":
            landmarks = folder
        elif task == "roi":
            roi = folder
        elif (folder / "session.pkl").is_file() or any(folder.glob("fold_*.pth")) or (folder / "hc").is_dir():
            raise ValueError(f"{folder}: an original KNEEL release snapshot; convert it first: "
                             f"kneel convert-release {folder} <new folder>, then --model <new folder>")
        else:
            raise ValueError(f"{folder}: not a kneel-monai model (no model.json), a bundle (models/roi, "
                             "models/landmarks) or a folder with roi/ and landmarks/ models")
    if roi_model is not None:
        roi = Path(roi_model)
        if _model_task(roi) != "roi":
            raise ValueError(f"{roi}: not an ROI model directory (model.json with task 'roi')")
    return roi, landmarks
