"""The module's sample radiograph in Slicer's Sample Data module (standard library only).

The sample is kneel-monai's synthetic bilateral knee radiograph (``samples/synthetic_bilateral_knee.dcm``).
It travels with the module — in a checkout it is the repository's file, in an installed extension the
build copies it into ``KneelLandmarksPackage/samples/`` — and is registered with a ``file:`` URI, so
Sample Data copies it into its cache: nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urljoin
from urllib.request import pathname2url

from .dependencies import package_root

__all__ = ["CATEGORY", "NODE_NAME", "SAMPLE_FILE", "SAMPLE_NAME", "THUMBNAIL", "register_sample_data",
           "sample_data_source", "sample_radiograph"]

CATEGORY = "Kneel Landmarks"
SAMPLE_NAME = "KneelSyntheticBilateralKnee"
NODE_NAME = "SyntheticBilateralKnee"
SAMPLE_FILE = "synthetic_bilateral_knee.dcm"
THUMBNAIL = "Resources/Icons/KneelSyntheticBilateralKnee.png"  # relative to the module folder


def sample_radiograph(module_dir: str | os.PathLike) -> Path | None:
    """The sample DICOM file that came with the module in ``module_dir``, or None."""
    root = package_root(module_dir)
    path = None if root is None else root / "samples" / SAMPLE_FILE
    return path if path is not None and path.is_file() else None


def sample_data_source(module_dir: str | os.PathLike) -> dict | None:
    """Keyword arguments of ``SampleData.SampleDataLogic.registerCustomSampleDataSource``; None without the sample.

    The checksum makes Sample Data copy the file again when an update of the extension changes it
    (without one it would keep its cached copy forever).
    """
    path = sample_radiograph(module_dir)
    if path is None:
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        "category": CATEGORY,
        "sampleName": SAMPLE_NAME,
        "thumbnailFileName": str(Path(module_dir) / THUMBNAIL),
        "uris": urljoin("file:", pathname2url(str(path))),  # as Sample Data's own tests make file URIs
        "fileNames": SAMPLE_FILE,
        "nodeNames": NODE_NAME,
        "checksums": f"SHA256:{digest}",
        "loadFileTypes": "VolumeFile",  # Slicer's volume reader, not a DICOM-import prompt
        "loadFileProperties": {"singleFile": True},  # this file only, not a series from its folder
    }


def register_sample_data(sample_data_logic, module_dir: str | os.PathLike) -> bool:
    """Register the sample with ``sample_data_logic`` (``SampleData.SampleDataLogic``); False without the sample."""
    source = sample_data_source(module_dir)
    if source is None:
        return False
    sample_data_logic.registerCustomSampleDataSource(**source)
    return True
