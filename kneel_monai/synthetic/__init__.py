"""Synthetic bilateral PA knee radiographs with exact landmark ground truth (see docs/synthetic.md).

* :mod:`.shape_model` — statistical shape model of the 16 landmarks (fitted to the 748 OAI knees, shipped);
* :mod:`.anatomy` — bone outlines through the landmarks and their tissue fields;
* :mod:`.render` — projection, processing and detector simulation;
* :mod:`.generate` — :func:`generate_radiograph`, ground truth, writers, cohorts;
* :mod:`.cli` — the ``kneel synth`` subcommand; :mod:`.preview` — overlays and contact sheets.

Names load on first use (:mod:`kneel_monai.lazy`), so that ``kneel``'s parser can name ``kneel synth``
without loading the generator.
"""

from ..lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "generate": ["DATASET_FORMAT", "GT_FORMAT", "SyntheticRadiograph", "generate_dataset", "generate_radiograph",
                 "ground_truth_dict", "write_radiograph"],
    "shape_model": ["ShapeModel", "fit_shape_model", "load_shape_model", "sample_knee_shape"],
}, globals())
