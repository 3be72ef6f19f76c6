"""The two training stages as objects a bundle config (or a script) wires together.

``StageConfig`` holds what differs between the ROI and the landmark stage and between the
paper's settings and the small CPU settings the shipped weights use; :func:`stage_datasets`
turns a datalist into MONAI datasets (deterministic steps cached), :func:`export_stage_model`
writes the trained network in the project's model format with its preprocessing.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, DataLoader, Dataset

from ..data.datalists import read_datalist, split_folds
from ..data.pipelines import landmark_stage_transforms, roi_stage_transforms
from ..model_io import save_model

__all__ = ["StageConfig", "STAGES", "stage_config", "default_network_args", "check_network_fits", "check_init_from",
           "stage_transforms", "stage_datasets", "stage_loaders", "export_stage_model"]


@dataclass(frozen=True)
class StageConfig:
    """Geometry of one stage: what the network sees."""

    task: str  # "roi" or "landmarks"
    spacing_mm: float
    pad_size: int
    crop_size: int
    roi_size_mm: float = 140.0  # landmarks only
    out_points: int = 16
    subset: str | None = "model_selection"  # validation PCK subset
    key_radius_mm: float = 2.5
    local_contrast: tuple[tuple[str, Any], ...] = ()  # sorted (key, value) pairs, e.g. (("kind", "clahe"), …); () none
    intensity_percentiles: tuple[float, float] = (5.0, 99.0)  # clip and scale to [0, 1] (method.md §2)
    intensity_region: str = "image"  # "roi": landmarks scaled again to the ROI's own percentiles (INTENSITY_REGIONS)

    @property
    def local_contrast_spec(self) -> dict[str, Any] | None:
        return dict(self.local_contrast) or None

    @classmethod
    def from_preprocessing(cls, task: str, pre: dict[str, Any], **kwargs: Any) -> StageConfig:
        """The geometry a model file's ``preprocessing`` describes."""
        intensity = pre.get("intensity") or {}
        return cls(task=task, spacing_mm=float(pre["spacing_mm"]), pad_size=int(pre["pad_size"]),
                   crop_size=int(pre["crop_size"]), roi_size_mm=float(pre.get("roi_size_mm", 140.0)),
                   local_contrast=tuple(sorted((pre.get("local_contrast") or {}).items())),
                   intensity_percentiles=(float(intensity.get("lower", 5.0)), float(intensity.get("upper", 99.0))),
                   intensity_region=str(intensity.get("region", "image")), **kwargs)

    def differences(self, other: StageConfig) -> list[str]:
        """What the network sees differently in ``other`` (empty: the same input): the one comparison
        of stages, used to match a model to a training stage (MONAI Label) or to check an evaluation."""
        if self.task != other.task:
            return [f"task {self.task} vs {other.task}"]
        fields = ("spacing_mm", "pad_size", "crop_size") + (("roi_size_mm",) if self.task == "landmarks" else ())
        out = [f"{f} {getattr(self, f)} vs {getattr(other, f)}" for f in fields
               if not math.isclose(float(getattr(self, f)), float(getattr(other, f)), rel_tol=1e-9)]
        if self.local_contrast != other.local_contrast:
            out.append(f"local contrast {self.local_contrast_spec} vs {other.local_contrast_spec}")
        if not all(math.isclose(a, b) for a, b in zip(self.intensity_percentiles, other.intensity_percentiles)):
            out.append(f"intensity percentiles {self.intensity_percentiles} vs {other.intensity_percentiles}")
        if self.intensity_region != other.intensity_region:
            out.append(f"intensity region {self.intensity_region} vs {other.intensity_region}")
        return out

    @property
    def preprocessing(self) -> dict[str, Any]:
        pre = {"spacing_mm": self.spacing_mm, "pad_size": self.pad_size, "crop_size": self.crop_size,
               "intensity": {"kind": "percentile", "lower": self.intensity_percentiles[0],
                             "upper": self.intensity_percentiles[1]}}
        if self.intensity_region != "image":
            pre["intensity"]["region"] = self.intensity_region
        if self.task == "landmarks":
            pre["roi_size_mm"] = self.roi_size_mm
        if self.local_contrast:
            pre["local_contrast"] = dict(self.local_contrast)
        return pre


#: method.md §2/§4 geometry (paper and release) and the reduced CPU geometry of the shipped weights:
#: same fields of view with larger pixels (landmarks 0.6 mm instead of 0.3; knee centres 4 mm instead of 1).
STAGES: dict[str, StageConfig] = {
    "roi": StageConfig("roi", 1.0, 520, 450, out_points=1, subset=None, key_radius_mm=10.0),
    "landmarks": StageConfig("landmarks", 0.3, 520, 450),
    # the knee centre needs ~10 mm, not 1 mm: 4 mm pixels keep the half-image field of view at 1/16 of the cost
    "roi_cpu": StageConfig("roi", 4.0, 130, 112, out_points=1, subset=None, key_radius_mm=10.0),
    # the same with CLAHE on the whole 4 mm image (64 mm tiles), as the landmark stage equalises its ROI
    "roi_cpu_clahe": StageConfig("roi", 4.0, 130, 112, out_points=1, subset=None, key_radius_mm=10.0,
                                 local_contrast=(("clip_limit", 0.01), ("kind", "clahe"), ("tile_mm", 64.0))),
    "landmarks_cpu": StageConfig("landmarks", 0.6, 260, 224),
    # the same with CLAHE on every ROI: real crops (CLAHE-processed) and raw radiographs look alike to the
    # network (docs/real_knees.md); the shipped landmark model of 0.3.x
    "landmarks_cpu_clahe": StageConfig("landmarks", 0.6, 260, 224,
                                       local_contrast=(("clip_limit", 0.01), ("kind", "clahe"), ("tile_mm", 16.0))),
    # and each ROI scaled to its own percentiles before CLAHE, as the real crops were: a full film's percentiles
    # depend on its field, frames and labels (docs/real_knees.md); the shipped landmark model since 0.4.0
    "landmarks_cpu_roi_scaled": StageConfig("landmarks", 0.6, 260, 224, intensity_region="roi",
                                            local_contrast=(("clip_limit", 0.01), ("kind", "clahe"),
                                                            ("tile_mm", 16.0))),
}


def stage_config(name: str) -> StageConfig:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; choose one of {sorted(STAGES)}")
    return STAGES[name]


def default_network_args(stage: StageConfig) -> dict[str, Any]:
    """The network a stage's geometry is published with: the paper's (N 24, depth 6) for its 450 px inputs, the
    shipped CPU models' (N 16, depth 4) for the smaller ones — so that no stage starts with a network too deep for
    its input (a bundle's default for ``network_args``; an override replaces it)."""
    width, depth = (24, 6) if stage.crop_size >= 450 else (16, 4)
    return {"preset": "paper", "in_channels": 1, "width": width, "depth": depth, "block": "hmp"}


def check_network_fits(network: torch.nn.Module, stage: StageConfig, stage_name: str = "") -> None:
    """Refuse, before any data is made or read, a network whose hourglass cannot take the stage's input
    (each level halves it; after the 4x smaller entry it must stay >= 1 pixel) or predicts another number of points."""
    depth, points = int(getattr(network, "depth", 0)), int(getattr(network, "out_points", stage.out_points))
    name = f"stage {stage_name!r}" if stage_name else f"the {stage.task} stage"
    if stage.crop_size // 4 < 2 ** depth:
        deepest = max(d for d in range(1, 9) if stage.crop_size // 4 >= 2 ** d)
        raise ValueError(f"network_args: an hourglass of depth {depth} needs inputs of at least {4 * 2 ** depth} px, "
                         f"{name} crops {stage.crop_size} px; use depth <= {deepest} (or leave network_args out: "
                         f"{default_network_args(stage)})")
    if points != stage.out_points:
        raise ValueError(f"network_args: the network predicts {points} points, {name} needs {stage.out_points}")


def check_init_from(init_from: str | os.PathLike | None) -> None:
    """Refuse, before any data is made, an ``init_from`` that names nothing: a checkpoint file or a model folder."""
    if init_from and not Path(init_from).exists():
        raise FileNotFoundError(f"init_from: {init_from} does not exist (a training checkpoint such as "
                                "runs/<stage>_fold<k>/best.pt, or a model folder with model.json)")


def stage_transforms(stage: StageConfig, train: bool, cutout: float = 0.1):
    """The stage's transform chain (training or evaluation); ``cutout``: side fraction, 0 turns it off."""
    if stage.task == "roi":
        return roi_stage_transforms(train, spacing_mm=stage.spacing_mm, pad=stage.pad_size, crop=stage.crop_size,
                                    cutout=cutout, percentiles=stage.intensity_percentiles,
                                    local_contrast=stage.local_contrast_spec)
    return landmark_stage_transforms(train, size_mm=stage.roi_size_mm, spacing_mm=stage.spacing_mm,
                                     pad=stage.pad_size, crop=stage.crop_size, cutout=cutout,
                                     local_contrast=stage.local_contrast_spec,
                                     percentiles=stage.intensity_percentiles, intensity_region=stage.intensity_region)


def stage_datasets(datalist: str | os.PathLike, stage: str | StageConfig, fold: int = 0, cache: bool = True,
                   num_workers: int = 0, max_items: int | None = None, cutout: float = 0.1
                   ) -> tuple[Dataset, Dataset]:
    """Training and validation datasets of one cross-validation fold.

    With ``cache``, everything up to the first random transform (reading, normalising,
    resampling, the ROI crop) is computed once and kept in memory (``CacheDataset``).
    """
    stage = stage_config(stage) if isinstance(stage, str) else stage
    data = read_datalist(datalist)
    expected = "roi" if stage.task == "roi" else "landmarks"
    if data["stage"] != expected:
        raise ValueError(f"{datalist}: a {data['stage']!r} datalist given to the {stage.task!r} stage")
    train_items, val_items = split_folds(data["items"], fold)
    if max_items is not None:
        train_items, val_items = train_items[:max_items], val_items[:max_items]
    if not train_items or not val_items:
        raise ValueError(f"{datalist}: fold {fold} leaves {len(train_items)} training and {len(val_items)} "
                         "validation items; need both")
    make = (lambda items, t: CacheDataset(items, t, num_workers=num_workers, progress=True)) if cache else Dataset
    return make(train_items, stage_transforms(stage, True, cutout)), make(val_items, stage_transforms(stage, False))


def stage_loaders(train_ds: Dataset, val_ds: Dataset, batch_size: int = 16, num_workers: int = 0,
                  seed: int = 42) -> tuple[DataLoader, DataLoader]:
    """Shuffled training loader (the ROI stage's two halves per radiograph are flattened) and validation loader."""
    g = torch.Generator().manual_seed(seed)
    return (DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=num_workers, generator=g,
                       drop_last=len(train_ds) > batch_size),
            DataLoader(val_ds, batch_size=batch_size, shuffle=False, num_workers=num_workers))


def export_stage_model(checkpoint: str | os.PathLike | list, network_args: dict[str, Any],
                       stage: str | StageConfig, out_dir: str | os.PathLike, provenance: dict[str, Any] | None = None,
                       dtype: torch.dtype | None = torch.float16, preset: str | None = None) -> Path:
    """Write trained weights (one checkpoint per fold) as a project model directory."""
    stage = stage_config(stage) if isinstance(stage, str) else stage
    paths = checkpoint if isinstance(checkpoint, list) else [checkpoint]
    state_dicts = []
    for path in paths:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        state_dicts.append(payload.get("network", payload))
    prov = {"stage": asdict(stage), **(provenance or {})}
    return save_model(out_dir, stage.task, dict(network_args, out_points=stage.out_points), state_dicts,
                      stage.preprocessing, prov, preset=preset, dtype=dtype)


def prepare_datalist(dataset_dir: str | os.PathLike | None, work_dir: str | os.PathLike, task: str,
                     synthetic_count: int = 24, synthetic_seed: int = 0, n_folds: int = 5, seed: int = 42) -> Path:
    """The datalist a training run uses, for ``task`` ``"roi"`` or ``"landmarks"``.

    * ``dataset_dir`` holding ``roi_datalist.json`` / ``landmark_datalist.json`` (the output of
      ``kneel build-datalists`` or ``kneel build-oai``): used as it is;
    * ``dataset_dir`` holding radiographs + ground-truth JSONs: datalists are built into ``work_dir``;
    * ``dataset_dir`` empty/None: a small **synthetic** set of ``synthetic_count`` radiographs is
      generated into ``work_dir`` first (so training runs on a fresh machine with no data).
    """
    from ..data.datalists import build_datalists

    name = "roi_datalist.json" if task == "roi" else "landmark_datalist.json"
    work_dir = Path(work_dir)
    if dataset_dir:
        root = Path(dataset_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset_dir {root}: not a folder")
        if (root / name).is_file():
            return root / name
    else:
        from ..synthetic.generate import generate_dataset

        root = work_dir / "synthetic"
        if not (root / "dataset.json").is_file():
            generate_dataset(root, synthetic_count, seed=synthetic_seed, fmt="dcm", progress=True)
    out = work_dir / "datalists"
    if not (out / name).is_file():
        lists = build_datalists(root, n_folds=n_folds, seed=seed)
        if not lists.landmarks:
            raise ValueError(f"{root}: no usable radiograph with ground truth; skipped: "
                             + "; ".join(b["reason"] for b in lists.bad_files[:5]))
        lists.write(out)
    return out / name
