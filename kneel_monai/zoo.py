"""The model zoo's view of the project's models: one network per file, as a plain PyTorch state dict.

The project's model directories (``model.json`` + safetensors) stay the source every face loads.
The zoo's tools expect ``models/model.pt`` (the state dict of ``network_def``) and, for a bundle with
more networks, one file per network (``model_<name>.pt``, as the zoo's multi-network bundles do);
these are written from the model directories and checked against them, so they never drift.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .atomic import atomic_write
from .model_io import CONFIG_NAME, load_model
from .networks import KneelHourglassNet

__all__ = ["ZOO_WEIGHTS", "zoo_network", "write_zoo_weights", "stale_zoo_weights"]

#: project model directory (under the bundle's ``models/``) → the zoo's weight file beside it
ZOO_WEIGHTS = {"landmarks": "model.pt", "roi": "model_roi.pt"}


def zoo_network(model_dir: str | os.PathLike) -> KneelHourglassNet:
    """The network of a project model directory, untrained: the bundle's ``network_def`` (the zoo's
    ``verify_net_in_out`` builds it; ``monai.bundle.load`` fills it from ``models/model.pt``)."""
    import json

    config = json.loads((Path(model_dir) / CONFIG_NAME).read_text(encoding="utf-8"))
    return KneelHourglassNet(**config["network"]["args"])


def _state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    """Fold 0's weights in fp16 (the shipped files' precision; loading casts them to the network's)."""
    net = load_model(model_dir, folds=[0]).networks[0]
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()}


def write_zoo_weights(bundle_dir: str | os.PathLike) -> list[Path]:
    """Write ``models/model.pt`` and ``models/model_roi.pt`` from ``models/landmarks`` and ``models/roi``."""
    models = Path(bundle_dir) / "models"
    written = []
    for name, file in ZOO_WEIGHTS.items():
        state = _state_dict(models / name)
        written.append(atomic_write(models / file, lambda tmp, s=state: torch.save(s, tmp)))
    return written


def stale_zoo_weights(bundle_dir: str | os.PathLike) -> list[str]:
    """What is wrong with the zoo's weight files of a bundle: missing, or not the project model's weights."""
    models = Path(bundle_dir) / "models"
    problems = []
    for name, file in ZOO_WEIGHTS.items():
        path = models / file
        if not path.is_file():
            problems.append(f"{path}: missing (write it: python -m monai.bundle run zoo_weights "
                            "--config_file configs/inference.json)")
            continue
        stored = torch.load(path, map_location="cpu", weights_only=True)
        expected = _state_dict(models / name)
        if stored.keys() != expected.keys() or any(not torch.equal(stored[k], expected[k]) for k in expected):
            problems.append(f"{path}: not the weights of {models / name} (write it again)")
    return problems
