"""``kneel`` command line: each subcommand is a few lines over the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""


def _cmd_convert_release(ns: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .model_io import load_model
    from .release import convert_release

    written = convert_release(ns.src, ns.dst)
    src = Path(ns.src)
    worst = 0.0
    for model_dir in written:
        model = load_model(model_dir)
        args = model.config["network"]["args"]
        print(
            f"wrote {model_dir}  task={model.task} folds={len(model.networks)} "
            f"width={args['width']} depth={args['depth']} block={args['block']}/{args['inner_block']}"
        )
        if ns.verify:
            folder = src if (src / "session.pkl").is_file() else src / model_dir.name
            expected = folder / "expected.npz"
            if not expected.is_file():
                raise CommandError(f"--verify: {expected} not found")
            with np.load(expected, allow_pickle=False) as data:
                got = model.predict(torch.from_numpy(data["input"])).numpy()
                diff = float(np.abs(got - data["output"]).max())
            worst = max(worst, diff)
            print(f"  verify against {expected}: max |Δ| = {diff:.2e} (normalised coordinates)")
    if ns.verify and worst > ns.tolerance:
        raise CommandError(f"--verify failed: max |Δ| {worst:.2e} > tolerance {ns.tolerance:.0e}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kneel", description="Knee landmark localisation (KNEEL) tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    conv = sub.add_parser(
        "convert-release",
        help="convert the original KNEEL release's snapshots to this project's model format",
        description="Convert a release snapshot folder (fold_*.pth + session.pkl + mean_std.npy), or a folder "
        "of them (lc/, hc/), to kneel-monai model directories. Pickles are read with a restricted loader.",
    )
    conv.add_argument("src", help="release snapshot folder, or a folder holding several")
    conv.add_argument("dst", help="output model directory (one sub-folder per snapshot folder when several)")
    conv.add_argument("--verify", action="store_true", help="check the outputs against each folder's expected.npz")
    conv.add_argument("--tolerance", type=float, default=1e-5, help="max |Δ| allowed by --verify (default 1e-5)")
    conv.set_defaults(func=_cmd_convert_release)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    from .model_io import ModelFormatError
    from .release import UnsafePickleError

    try:
        return ns.func(ns)
    except (CommandError, ModelFormatError, UnsafePickleError, OSError) as err:
        print(f"kneel {ns.command}: error: {err}", file=sys.stderr)
        return 2

if __name__ == "__main__":
    sys.exit(main())
