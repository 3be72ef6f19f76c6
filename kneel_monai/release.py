"""Read the original KNEEL release's snapshots safely and convert them to the project's format.

A release snapshot folder (what its users have on disk)::

    <model>/fold_<k>_<date>_snapshot.pth   {'model': state_dict, ...}
    <model>/session.pkl                     pickle of {'args': [argparse.Namespace]}
    mean_std.npy                            (2, 3) mean and std on the 0-255 scale, in the
                                            folder or its parent

Nothing here executes pickled code: weights load with ``torch.load(weights_only=True)`` and
``session.pkl`` with :class:`RestrictedUnpickler`, which admits ``argparse.Namespace`` and
plain builtin containers only.
"""

from __future__ import annotations

import argparse
import io
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .model_io import ModelFormatError, load_state_dict_strict, save_model
from .networks import KneelHourglassNet

__all__ = [
    "UnsafePickleError",
    "RestrictedUnpickler",
    "load_session_args",
    "ReleaseSnapshot",
    "read_release_snapshot",
    "release_network_args",
    "map_release_state_dict",
    "convert_release_model",
    "convert_release",
]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something other than the few harmless types a release session holds."""


_SAFE_GLOBALS = {
    ("argparse", "Namespace"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
    ("builtins", "slice"),
    ("builtins", "object"),
    ("copyreg", "_reconstructor"),  # protocol 0/1 rebuild objects through it; the class is checked too
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except ``argparse.Namespace`` and plain builtins."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load {module}.{name}: a release session may only hold argparse.Namespace and builtins"
        )


def load_session_args(path: str | Path) -> argparse.Namespace:
    """The training arguments in a release ``session.pkl`` (``{'args': [Namespace]}``), read safely."""
    path = Path(path)
    try:
        data = RestrictedUnpickler(io.BytesIO(path.read_bytes())).load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ModelFormatError(f"{path}: not a readable release session pickle ({err})") from None
    args = data.get("args") if isinstance(data, dict) else None
    if isinstance(args, (list, tuple)) and args:
        args = args[0]
    if not isinstance(args, argparse.Namespace):
        raise ModelFormatError(f"{path}: expected {{'args': [argparse.Namespace]}}, got {type(data).__name__}")
    return args


@dataclass
class ReleaseSnapshot:
    """One release model folder: its fold weights, training arguments and intensity statistics."""

    folder: Path
    args: argparse.Namespace
    fold_files: list[Path]
    mean: np.ndarray  # (3,), 0-255 scale
    std: np.ndarray  # (3,)

    @property
    def task(self) -> str:
        return "roi" if self.args.annotations == "lc" else "landmarks"

    @property
    def spacing_mm(self) -> float:
        return float(self.args.lc_spacing if self.args.annotations == "lc" else self.args.hc_spacing)


_FOLD_PATTERN = re.compile(r"^fold_(\d+)_.*\.pth$")


def _find_mean_std(folder: Path) -> Path:
    for candidate in (folder / "mean_std.npy", folder.parent / "mean_std.npy"):
        if candidate.is_file():
            return candidate
    raise ModelFormatError(f"{folder}: no mean_std.npy in the folder or its parent")


def read_release_snapshot(folder: str | Path) -> ReleaseSnapshot:
    """Find and validate a release model folder (``fold_*.pth`` + ``session.pkl`` + ``mean_std.npy``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFormatError(f"{folder}: not a folder")
    session = folder / "session.pkl"
    if not session.is_file():
        raise ModelFormatError(f"{folder}: no session.pkl (not a release snapshot folder)")
    folds = sorted(
        (p for p in folder.iterdir() if _FOLD_PATTERN.match(p.name)),
        key=lambda p: int(_FOLD_PATTERN.match(p.name).group(1)),
    )
    if not folds:
        raise ModelFormatError(f"{folder}: no fold_<k>_*.pth snapshot files")
    args = load_session_args(session)
    for required in ("annotations", "base_width", "multiscale_hg"):
        if not hasattr(args, required):
            raise ModelFormatError(f"{session}: training arguments lack {required!r}")
    if args.annotations not in ("lc", "hc"):
        raise ModelFormatError(f"{session}: annotations must be 'lc' or 'hc', got {args.annotations!r}")
    if getattr(args, "use_se", False):
        raise ModelFormatError(f"{session}: squeeze-excitation (use_se=True) snapshots are not supported")
    mean_std_path = _find_mean_std(folder)
    mean_std = np.load(mean_std_path, allow_pickle=False)
    if mean_std.shape != (2, 3):
        raise ModelFormatError(f"{mean_std_path}: expected shape (2, 3), got {mean_std.shape}")
    return ReleaseSnapshot(folder, args, folds, mean_std[0].astype(float), mean_std[1].astype(float))


def _load_release_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafePickleError(f"{path}: refused by the weights-only loader ({str(err).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ModelFormatError(f"{path}: cannot read the snapshot ({err})") from None
    state = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFormatError(f"{path}: expected {{'model': state_dict}}")
    return state


def _level_block(state: dict[str, torch.Tensor], prefix: str) -> str:
    if f"{prefix}scale1.0.weight" in state:
        return "hmp"
    if f"{prefix}bottleneck.0.weight" in state:
        return "bottleneck"
    raise ModelFormatError(f"no residual block found at {prefix!r} in the release state dict")


def release_network_args(state: dict[str, torch.Tensor], args: argparse.Namespace | None = None) -> dict[str, Any]:
    """:class:`KneelHourglassNet` arguments that reproduce a release state dict.

    Read off the tensors (width, channels, depth, kernel sizes, block type per level) and
    cross-checked with the session's arguments when given.
    """
    try:
        stem = state["layer1.0.weight"]
        out = state["out_block.0.weight"]
        mixer = state["mixer.1.0.weight"]
    except KeyError as err:
        raise ModelFormatError(f"release state dict lacks {err.args[0]!r}; is it a KNEEL HourglassNet?") from None
    depth = 0
    while f"hourglass.{'lower4.' * depth}lower1." + "scale1.0.weight" in state or (
        f"hourglass.{'lower4.' * depth}lower1.bottleneck.0.weight" in state
    ):
        depth += 1
    if depth == 0:
        raise ModelFormatError("release state dict has no hourglass levels")
    blocks = [_level_block(state, f"hourglass.{'lower4.' * level}lower1.") for level in range(depth)]
    if len(set(blocks[1:])) > 1:
        raise ModelFormatError(f"inner hourglass levels mix block types {blocks[1:]}; not representable")
    entry_block = _level_block(state, "layer1.3.")
    if entry_block != blocks[0]:
        raise ModelFormatError(f"entry uses {entry_block} blocks but the outer hourglass level {blocks[0]}")
    width = int(stem.shape[0])
    net_args = dict(
        in_channels=int(stem.shape[1]),
        out_points=int(out.shape[0]),
        width=width,
        depth=depth,
        block=blocks[0],
        inner_block=blocks[1] if depth > 1 else None,
        upsample_mode="bilinear",
        pointwise_kernel_size=int(mixer.shape[-1]),
        bias="layer1.0.bias" in state,
        dropout=0.25,
        beta=1.0,
        coordinate_convention="release",
    )
    if args is not None:
        if int(args.base_width) != width:
            raise ModelFormatError(f"session says base_width={args.base_width} but the weights have width {width}")
        if bool(args.multiscale_hg) != (blocks[0] == "hmp"):
            raise ModelFormatError(
                f"session says multiscale_hg={args.multiscale_hg} but the weights use {blocks[0]} blocks"
            )
        expected_points = 1 if args.annotations == "lc" else 16
        if net_args["out_points"] != expected_points:
            raise ModelFormatError(
                f"session says annotations={args.annotations!r} ({expected_points} points) "
                f"but the weights output {net_args['out_points']}"
            )
    return net_args


_LEVEL_PART = {"lower1": "lower.0", "lower2": "lower.1", "lower3": "lower.2", "lower4": "inner",
               "lower5": "lower_out", "upper1": "upper.0", "upper2": "upper.1", "upper3": "upper.2"}
_TOP_LEVEL = [
    (re.compile(r"^layer1\.0\."), "entry.stem.conv."),
    (re.compile(r"^layer1\.1\."), "entry.stem.norm."),
    (re.compile(r"^layer1\.3\."), "entry.res1."),
    (re.compile(r"^layer2\.([0-2])\."), lambda m: f"entry.res{int(m.group(1)) + 2}."),
    (re.compile(r"^mixer\.1\."), "head.mix1."),
    (re.compile(r"^mixer\.3\."), "head.mix2."),
    (re.compile(r"^out_block\.0\."), "out_conv."),
]
_BLOCK_PART = {"bottleneck": "reduce", "out": "expand"}  # release bottleneck names → ours
_CONV_NORM = re.compile(r"\.(scale[123]|skip|bottleneck|conv|out|mix[12])\.([01])\.")


def _map_key(key: str) -> str:
    for pattern, repl in _TOP_LEVEL:
        key, n = pattern.subn(repl, key, count=1)
        if n:
            break
    if key.startswith("hourglass."):
        key = re.sub(r"\b(lower[1-5]|upper[1-3])\b", lambda m: _LEVEL_PART[m.group(1)], key)

    def conv_norm(m: re.Match) -> str:
        part = _BLOCK_PART.get(m.group(1), m.group(1))
        return f".{part}.{'conv' if m.group(2) == '0' else 'norm'}."

    return _CONV_NORM.sub(conv_norm, key)


def map_release_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a release state dict's keys to :class:`KneelHourglassNet`'s module tree."""
    return {_map_key(k): v for k, v in state.items()}


def convert_release_model(snapshot: ReleaseSnapshot) -> tuple[dict[str, Any], list[dict[str, torch.Tensor]]]:
    """Network arguments and per-fold state dicts (project keys), each verified by a strict load."""
    state_dicts, net_args = [], None
    for fold_file in snapshot.fold_files:
        state = _load_release_state_dict(fold_file)
        args = release_network_args(state, snapshot.args)
        if net_args is not None and args != net_args:
            raise ModelFormatError(f"{fold_file}: architecture differs from the other folds")
        net_args = args
        mapped = map_release_state_dict(state)
        load_state_dict_strict(KneelHourglassNet(**args), mapped, str(fold_file))
        state_dicts.append(mapped)
    return net_args, state_dicts


def convert_release(src: str | Path, dst: str | Path) -> list[Path]:
    """Convert a release snapshot folder, or a folder of them (e.g. ``lc/`` and ``hc/``), to model dirs.

    A single snapshot folder is written to ``dst``; a folder of snapshot folders to
    ``dst/<name>`` each. Returns the written model directories.
    """
    src, dst = Path(src), Path(dst)
    if (src / "session.pkl").is_file():
        pairs = [(src, dst)]
    else:
        pairs = [(sub, dst / sub.name) for sub in sorted(src.iterdir()) if (sub / "session.pkl").is_file()] \
            if src.is_dir() else []
    if not pairs:
        raise ModelFormatError(f"{src}: no release snapshot folders (a folder with session.pkl and fold_*.pth)")
    snapshots = [read_release_snapshot(folder) for folder, _ in pairs]  # validate all before writing any
    written = []
    for snapshot, (_, out) in zip(snapshots, pairs):
        net_args, state_dicts = convert_release_model(snapshot)
        pad = int(getattr(snapshot.args, "pad_x", 520))
        crop = int(getattr(snapshot.args, "crop_x", 450))
        preprocessing = {
            "spacing_mm": snapshot.spacing_mm,
            "pad_size": pad,
            "crop_size": crop,
            "intensity": {"kind": "release_mean_std", "mean": snapshot.mean.tolist(), "std": snapshot.std.tolist()},
        }
        provenance = {
            "source": "original KNEEL release snapshot (converted)",
            "release_annotations": snapshot.args.annotations,
            "release_folds": [p.name for p in snapshot.fold_files],
            "release_args": {k: v for k, v in vars(snapshot.args).items() if isinstance(v, (int, float, str, bool))},
        }
        written.append(save_model(out, snapshot.task, net_args, state_dicts, preprocessing, provenance))
    return written
