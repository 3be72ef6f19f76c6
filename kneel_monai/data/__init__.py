"""Datasets: ground truth, patient-wise folds, datalists and the stage transform chains."""

from .datalists import DATALIST_FORMAT, Datalists, build_datalists, read_datalist, split_folds, write_datalist
from .folds import patient_folds
from .ground_truth import (
    GT_FORMAT,
    GroundTruth,
    GroundTruthError,
    KneeTruth,
    is_ground_truth_file,
    read_ground_truth,
    write_ground_truth,
)

__all__ = [
    "DATALIST_FORMAT",
    "Datalists",
    "build_datalists",
    "read_datalist",
    "split_folds",
    "write_datalist",
    "patient_folds",
    "GT_FORMAT",
    "GroundTruth",
    "GroundTruthError",
    "KneeTruth",
    "is_ground_truth_file",
    "read_ground_truth",
    "write_ground_truth",
]
