"""The training set of the shipped stage-1 (ROI) model: synthetic films with real knees composited in.

Four parts, each film a 1150 × 1330 px PNG at 0.3 mm with its ground-truth JSON:

* ``train``: bilateral films (every third with a tight field); in 4 of 5 the knees are replaced by real
  knee crops of the training folds (:func:`~kneel_monai.synthetic.composite.composite_real_knees`, a narrow
  feathered edge so that the synthetic knee under the crop does not show beside it);
* ``train_single``: the same kind of films written as two single-knee fields side by side
  (:func:`~kneel_monai.synthetic.composite.single_knee_fields`): stage 1 reads a single-knee image whole;
* ``val``, ``val_single``: every film composited, with the validation fold's knees only.

and ``roi_datalist.json`` over all four (training parts fold 1, validation parts fold 0), the datalist the
bundle's training reads from ``--dataset_dir``. Deterministic for ``seed``. How the shipped model was trained
on it, and what it measured: docs/real_knees.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .composite import composite_real_knees, read_real_knees, single_knee_fields
from .generate import generate_radiograph, write_radiograph

__all__ = ["STAGE1_PARTS", "write_stage1_set"]

#: (part, seed offset, single-knee fields, validation) of each part
STAGE1_PARTS = (("train", 0, False, False), ("val", 100_000, False, True),
                ("train_single", 200_000, True, False), ("val_single", 300_000, True, True))


def write_stage1_set(out_dir: str | os.PathLike, real_datalist: str | os.PathLike,
                     counts: dict[str, int] | None = None, seed: int = 2_000_000,
                     border_range: tuple[float, float] = (0.05, 0.12), train_folds: tuple[int, ...] = (1,),
                     validation_folds: tuple[int, ...] = (0,), progress: bool = True) -> Path:
    """Write the set into ``out_dir``; returns the path of its ``roi_datalist.json``.

    Args:
        real_datalist: registered real knee crops (``kneel build-oai-crops``' ``landmark_datalist.json``).
        counts: films per part (default: train 300, val 60, train_single 200, val_single 40 — the shipped
            model's set).
        border_range: the composited crop's feathered edge, a fraction of its side.
    """
    from tqdm.auto import tqdm

    from ..data.datalists import build_datalists, write_datalist

    counts = {"train": 300, "val": 60, "train_single": 200, "val_single": 40, **(counts or {})}
    # read_real_knees refuses folds without a knee, naming them
    knees = {False: read_real_knees(real_datalist, folds=train_folds),
             True: read_real_knees(real_datalist, folds=validation_folds)}
    out = Path(out_dir)
    items = []
    for part, offset, fields, validation in STAGE1_PARTS:
        base = seed + offset
        rng = np.random.default_rng(base + 7)
        for i in tqdm(range(counts[part]), desc=part, unit="film", disable=not progress):
            film = generate_radiograph(base + i, spacing_mm=0.3, size=(1150, 1330),
                                       crop="tight" if (i % 3 == 0 and not fields) else None)
            if validation or i % 5 != 4:  # a fifth of the training films keep their synthetic knees
                film = composite_real_knees(film, knees[validation], rng, border_range=border_range)
            if fields:
                film = single_knee_fields(film, rng)
            write_radiograph(film, out / part, f"film_{base + i}", fmt="png")
        if counts[part]:
            for item in build_datalists(out / part, progress=False).roi:
                items.append({**item, "fold": 0 if validation else 1})
    return write_datalist(out / "roi_datalist.json", "roi", items)
