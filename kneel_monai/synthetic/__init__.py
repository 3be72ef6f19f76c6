"""Synthetic bilateral PA knee radiographs with exact landmark ground truth (see docs/synthetic.md).

* :mod:`.shape_model` — statistical shape model of the 16 landmarks (fitted to the 748 OAI knees, shipped);
* :mod:`.anatomy` — bone outlines through the landmarks and their tissue fields;
* :mod:`.render` — projection, processing and detector simulation;
* :mod:`.generate` — :func:`generate_radiograph`, ground truth, writers, cohorts;
* :mod:`.cli` — the ``kneel synth`` subcommand; :mod:`.preview` — overlays and contact sheets.
"""

from .generate import (
    DATASET_FORMAT,
    GT_FORMAT,
    SyntheticRadiograph,
    generate_dataset,
    generate_radiograph,
    ground_truth_dict,
    write_radiograph,
)
from .shape_model import ShapeModel, fit_shape_model, load_shape_model, sample_knee_shape

__all__ = [
    "DATASET_FORMAT",
    "GT_FORMAT",
    "ShapeModel",
    "SyntheticRadiograph",
    "fit_shape_model",
    "generate_dataset",
    "generate_radiograph",
    "ground_truth_dict",
    "load_shape_model",
    "sample_knee_shape",
    "write_radiograph",
]
