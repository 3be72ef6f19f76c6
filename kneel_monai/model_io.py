"""The project's one on-disk model format, and the one function every face loads it with.

A model directory holds:

* ``model.json`` — what the network is and how its input is made (no pickles anywhere)::

    {"format": "kneel-monai/model", "format_version": 1,
     "task": "roi" | "landmarks",
     "network": {"preset": "paper", "args": {...KneelHourglassNet arguments...}},
     "weights": ["fold_0.safetensors", ...],       # one file per fold; >1 = ensemble
     "preprocessing": {"spacing_mm": 0.3, "pad_size": 520, "crop_size": 450,
                       "intensity": {...}},       # see INTENSITY_KINDS
     "provenance": {...},                          # free text: data, schedule, figures
     "fallback": "../roi_synthetic"}               # optional, ROI models only (below)

* the weight files: ``safetensors`` state dicts (tensors only).

An ROI model may name a ``fallback``: another ROI model directory (relative to this one) whose
proposals the pipeline tries when this model's lead to no knee. Two stage-1 models trained on
different data miss different knees (docs/real_knees.md). A fallback has no fallback of its own.

Intensity normalisations: ``{"kind": "percentile", "lower": 5, "upper": 99}`` (clip to the
percentiles, scale to [0, 1]; the project default; a landmark model's ``"region": "roi"`` scales each
knee ROI again to its own percentiles) or ``{"kind": "release_mean_std",
"mean": [..3..], "std": [..3..]}`` (the release's: scale to 0-255, replicate grey to the input
channels, subtract the mean and divide by the std given on the 0-255 scale).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_write, atomic_write_text
from .networks import KneelHourglassNet

__all__ = [
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "TASKS",
    "INTENSITY_KINDS",
    "INTENSITY_REGIONS",
    "ModelFormatError",
    "KneelModel",
    "save_model",
    "load_model",
    "load_state_dict_strict",
    "carry_fallback",
]

MODEL_FORMAT = "kneel-monai/model"
MODEL_FORMAT_VERSION = 1
TASKS = ("roi", "landmarks")
INTENSITY_KINDS = ("percentile", "release_mean_std")
#: where a landmark model's percentiles are taken: over the whole radiograph only ("image"), or then again over
#: each knee's ROI ("roi") — the real knee crops a model learns from are ROI-sized, so their percentiles are the
#: ROI's, while a full radiograph's depend on its field, collimation, labels and frames (docs/real_knees.md)
INTENSITY_REGIONS = ("image", "roi")
CONFIG_NAME = "model.json"


class ModelFormatError(ValueError):
    """A model directory or state dict that does not match what it claims to be."""


@dataclass
class KneelModel:
    """A loaded model: one network per fold (an ensemble when more than one), and its description."""

    task: str
    networks: list[KneelHourglassNet]
    config: dict[str, Any]
    path: Path | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    fallback: KneelModel | None = None  # ROI models: tried when this one's proposals give no knee

    @property
    def pixel_offset(self) -> float:
        """Normalised → pixel: ``x_px = x · W − offset`` (pixel-centred networks 0.5, the release's i/W 0)."""
        return 0.5 if self.networks[0].soft_argmax.convention == "pixel_center" else 0.0

    def network_input(self, images, device: str | torch.device = "cpu") -> torch.Tensor:
        """Stack ``(1, H, W)`` images in [0, 1] into the ``(B, C, H, W)`` input this model expects.

        ``release_mean_std`` models get the release's 0–255 scale, grey replicated to their input
        channels and standardised with the release's mean/std.
        """
        x = torch.stack([im.as_tensor() if hasattr(im, "as_tensor") else torch.as_tensor(im) for im in images]).float()
        channels = self.networks[0].in_channels
        intensity = self.preprocessing["intensity"]
        if intensity["kind"] == "release_mean_std":
            x = (x * 255.0).expand(-1, channels, -1, -1)
            mean = torch.tensor(intensity["mean"][:channels], dtype=x.dtype).view(1, -1, 1, 1)
            std = torch.tensor(intensity["std"][:channels], dtype=x.dtype).view(1, -1, 1, 1)
            x = (x - mean) / std
        elif channels != 1:
            x = x.expand(-1, channels, -1, -1)
        return x.contiguous(memory_format=torch.channels_last).to(device)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Fold-averaged coordinates ``(B, M, 2)`` in [0, 1] for a preprocessed batch ``(B, C, H, W)``."""
        return torch.stack([net(x) for net in self.networks]).mean(dim=0)


def load_state_dict_strict(network: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``network`` requiring the exact same keys and shapes.

    Raises :class:`ModelFormatError` naming the missing, unexpected and mis-shaped keys.
    """
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    bad_shapes = sorted(
        f"{k}: file {tuple(state_dict[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(expected[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or unexpected or bad_shapes:

        def head(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" … ({len(items)} in all)" if len(items) > 8 else "")

        parts = [f"{source}: state dict does not match the network"]
        if missing:
            parts.append(f"missing keys: {head(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {head(unexpected)}")
        if bad_shapes:
            parts.append(f"shape mismatches: {head(bad_shapes)}")
        raise ModelFormatError("; ".join(parts))
    network.load_state_dict(state_dict, strict=True)


def save_model(
    directory: str | os.PathLike,
    task: str,
    network_args: dict[str, Any],
    state_dicts: list[dict[str, torch.Tensor]],
    preprocessing: dict[str, Any],
    provenance: dict[str, Any] | None = None,
    preset: str | None = None,
    dtype: torch.dtype | None = None,
    fallback: str | None = None,
) -> Path:
    """Write a model directory (weights first, ``model.json`` last, each atomically).

    Args:
        network_args: the complete :class:`KneelHourglassNet` keyword arguments.
        state_dicts: one per fold.
        dtype: store floating tensors in this dtype (e.g. ``torch.float16`` to halve the size);
            loading casts back to float32.
        fallback: ROI models: the directory of a second ROI model, relative to ``directory``, whose
            proposals are tried when this one's give no knee.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if fallback is not None and (task != "roi" or not isinstance(fallback, str) or not fallback):
        raise ValueError(f"only an ROI model may name a fallback, as a relative directory; got {fallback!r} for a "
                         f"{task} model")
    if not state_dicts:
        raise ValueError("save_model needs at least one state dict")
    _validate_preprocessing(preprocessing, "save_model")
    KneelHourglassNet(**network_args)  # fail now on bad arguments, not at load time
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for fold, sd in enumerate(state_dicts):
        tensors = {
            k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
            for k, v in sd.items()
        }
        name = f"fold_{fold}.safetensors"
        atomic_write(out / name, lambda tmp: save_file(tensors, str(tmp)))
        names.append(name)
    config = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "task": task,
        "network": {"preset": preset, "args": network_args},
        "weights": names,
        "preprocessing": preprocessing,
        "provenance": provenance or {},
    }
    if fallback is not None:
        config["fallback"] = fallback
    atomic_write_text(out / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return out


def _validate_preprocessing(pre: Any, source: str) -> None:
    if not isinstance(pre, dict):
        raise ModelFormatError(f"{source}: 'preprocessing' must be an object, got {type(pre).__name__}")
    for key in ("spacing_mm", "pad_size", "crop_size", "intensity"):
        if key not in pre:
            raise ModelFormatError(f"{source}: 'preprocessing' lacks {key!r}")
    kind = pre["intensity"].get("kind") if isinstance(pre["intensity"], dict) else None
    if kind not in INTENSITY_KINDS:
        raise ModelFormatError(f"{source}: unknown intensity kind {kind!r}; expected one of {INTENSITY_KINDS}")
    region = pre["intensity"].get("region", "image")
    if region not in INTENSITY_REGIONS:
        raise ModelFormatError(f"{source}: unknown intensity region {region!r}; expected one of {INTENSITY_REGIONS}")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               folds: list[int] | None = None, _fallback_of: Path | None = None) -> KneelModel:
    """Load a model directory (or its ``model.json``) into eval-mode networks on ``device``; an ROI
    model's ``fallback`` with it (all of its folds).

    Args:
        folds: which fold weights to load (default: all listed — a fold ensemble).
    """
    path = Path(path)
    config_path = path if path.is_file() else path / CONFIG_NAME
    if not config_path.is_file():
        raise ModelFormatError(f"{path}: not a kneel-monai model (no {CONFIG_NAME})")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelFormatError(f"{config_path}: invalid JSON ({err})") from None
    if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
        raise ModelFormatError(f"{config_path}: 'format' is not {MODEL_FORMAT!r}")
    version = config.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFormatError(f"{config_path}: 'format_version' must be a whole number, got {version!r}")
    if version > MODEL_FORMAT_VERSION:
        raise ModelFormatError(
            f"{config_path}: format_version {config['format_version']} is newer than this library reads "
            f"({MODEL_FORMAT_VERSION}); upgrade kneel-monai"
        )
    task = config.get("task")
    if task not in TASKS:
        raise ModelFormatError(f"{config_path}: 'task' must be one of {TASKS}, got {task!r}")
    _validate_preprocessing(config.get("preprocessing"), str(config_path))
    weights = config.get("weights") or []
    if not isinstance(weights, list) or not all(isinstance(w, str) and w for w in weights):
        raise ModelFormatError(f"{config_path}: 'weights' must be a list of file names, got {weights!r}"[:300])
    if not weights:
        raise ModelFormatError(f"{config_path}: lists no weight files")
    chosen = weights if folds is None else [weights[i] for i in folds]
    network = config.get("network")
    args = network.get("args") if isinstance(network, dict) else None
    if not isinstance(args, dict):
        raise ModelFormatError(f"{config_path}: 'network' must be an object with the network's 'args', got "
                               f"{network!r}"[:300])
    try:
        template = KneelHourglassNet(**args)
    except (TypeError, ValueError) as err:
        raise ModelFormatError(f"{config_path}: bad network arguments ({err})") from None
    networks = []
    for name in chosen:
        weight_path = config_path.parent / name
        if not weight_path.is_file():
            raise ModelFormatError(f"{weight_path}: weight file listed in {CONFIG_NAME} is missing")
        net = KneelHourglassNet(**args) if networks else template
        try:
            tensors = load_file(str(weight_path))
        except Exception as err:  # safetensors raises its own error types for damaged or foreign files
            raise ModelFormatError(f"{weight_path}: not a readable safetensors file ({type(err).__name__}: "
                                   f"{str(err).splitlines()[0] if str(err) else 'unreadable'})") from None
        sd = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
        load_state_dict_strict(net, sd, str(weight_path))
        networks.append(net.to(device).eval())
    return KneelModel(task=task, networks=networks, config=config, path=config_path.parent,
                      preprocessing=config["preprocessing"],
                      fallback=_load_fallback(config, config_path, device, _fallback_of))


def _load_fallback(config: dict[str, Any], config_path: Path, device: str | torch.device,
                   fallback_of: Path | None) -> KneelModel | None:
    """The ROI model a model.json names as its ``fallback`` (see the module docstring), or None."""
    name = config.get("fallback")
    if name is None:
        return None
    if fallback_of is not None:
        raise ModelFormatError(f"{config_path}: the fallback of {fallback_of} names a fallback of its own; "
                               "one fallback at most")
    if config["task"] != "roi" or not isinstance(name, str) or not name:
        raise ModelFormatError(f"{config_path}: 'fallback' must name an ROI model directory relative to this one, "
                               f"and only ROI models have one; got {name!r} in a {config['task']} model"[:300])
    folder = (config_path.parent / name).resolve()
    if not (folder / CONFIG_NAME).is_file():
        raise ModelFormatError(f"{config_path}: its fallback {name!r} ({folder}) is not a kneel-monai model "
                               f"(no {CONFIG_NAME})")
    fallback = load_model(folder, device, None, _fallback_of=config_path.parent)
    if fallback.task != "roi":
        raise ModelFormatError(f"{config_path}: its fallback {folder} is a {fallback.task} model, not an ROI model")
    return fallback


def carry_fallback(source: str | os.PathLike, exported: str | os.PathLike) -> Path | None:
    """Give a model ``exported`` from (fine-tuned from) the ROI model ``source`` the same fallback: the
    fallback's directory is copied beside ``exported`` (unless one of its name is there) and named in its
    ``model.json``. Returns the copy's path, or None when ``source`` has no fallback."""
    import shutil

    name = json.loads((Path(source) / CONFIG_NAME).read_text(encoding="utf-8")).get("fallback")
    if not name:
        return None
    exported = Path(exported)
    copy = exported.parent / Path(name).name
    if not (copy / CONFIG_NAME).is_file():
        shutil.copytree((Path(source) / name).resolve(), copy, dirs_exist_ok=True)
    config = json.loads((exported / CONFIG_NAME).read_text(encoding="utf-8"))
    config["fallback"] = f"../{copy.name}"
    atomic_write_text(exported / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return copy
