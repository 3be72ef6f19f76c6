"""The Kneel Landmarks module's logic, importable without Slicer's GUI (MRML classes, VTK and numpy).

``kneel_monai`` is imported only inside functions, so that Slicer can load the module before
the dependencies are installed.
"""

from .geometry import ijk_to_ras_matrix, pixels_to_ras, ras_to_pixels, volume_spacing_row_col
from .logic import DEVICES, KneelResultNodes, LandmarksLogic, PredictionRequest, check_device, check_model
from .runner import CANCELLED, DONE, FAILED, RUNNING, JobStatus, PredictionJob, default_python, predict_command
from .server import LabelServer, LabelServerError
from .volume import (
    KneelInputError,
    RadiographInput,
    SpacingCheck,
    check_spacing,
    find_source_file,
    prepare_radiograph,
    write_nrrd,
)

__all__ = [
    "CANCELLED", "DEVICES", "LabelServer", "LabelServerError", "DONE", "FAILED", "RUNNING", "JobStatus",
    "KneelInputError", "KneelResultNodes",
    "LandmarksLogic", "PredictionJob", "PredictionRequest", "RadiographInput", "SpacingCheck", "check_device",
    "check_model", "check_spacing", "default_python", "find_source_file", "ijk_to_ras_matrix", "pixels_to_ras",
    "predict_command", "prepare_radiograph", "ras_to_pixels", "volume_spacing_row_col", "write_nrrd",
]
