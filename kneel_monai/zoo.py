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
from .networks import PRESETS, KneelHourglassNet

__all__ = ["ZOO_WEIGHTS", "ZooNetwork", "bundle_network", "zoo_network", "write_zoo_weights", "stale_zoo_weights"]

#: project model directory (under the bundle's ``models/``) → the zoo's weight file beside it
ZOO_WEIGHTS = {"landmarks": "model.pt", "roi": "model_roi.pt"}


class ZooNetwork(KneelHourglassNet):
    """:class:`KneelHourglassNet` as the bundle's ``network_def``: loading weights that do not cover it fails.

    MONAI's loaders (``monai.bundle.load``, ``copy_model_state``) copy the tensors whose names and shapes match
    and only log how many, so weights of another network (another width, depth or number of points) would give
    a partly random network. They hand ``load_state_dict`` the network's own tensors for the ones they did not
    copy; any such tensor left in place is refused here, with what is missing.
    """

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        own = {k: v.data_ptr() for k, v in super().state_dict().items() if v.numel()}
        untouched = [k for k, v in state_dict.items() if k in own and v.numel() and v.data_ptr() == own[k]]
        if untouched:
            raise ValueError(f"the weights do not fit this network ({self.hparams['width']} wide, depth "
                             f"{self.hparams['depth']}, {self.out_points} points): {len(untouched)} of {len(own)} "
                             f"tensors were not in them (e.g. {', '.join(untouched[:3])}); were they saved from "
                             "another network_args or stage?")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def bundle_network(preset: str = "paper", out_points: int = 16, **overrides) -> ZooNetwork:
    """``kneel_monai.networks.build_network`` for the bundle's configs (a :class:`ZooNetwork`)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; choose one of {sorted(PRESETS)}")
    return ZooNetwork(out_points=out_points, **{**PRESETS[preset], **overrides})


def zoo_network(model_dir: str | os.PathLike) -> ZooNetwork:
    """The network of a project model directory, untrained: ``network_def`` of the bundle's inference config
    (the zoo's ``verify_net_in_out`` builds it; MONAI's loaders fill it from ``models/model.pt``)."""
    import json

    config = json.loads((Path(model_dir) / CONFIG_NAME).read_text(encoding="utf-8"))
    return ZooNetwork(**config["network"]["args"])


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
