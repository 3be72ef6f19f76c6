"""Reading knee radiographs (DICOM and the formats SimpleITK reads) and writing DICOM.

See ``docs/reading.md`` for the conventions, the spacing precedence and the errors.
"""

from .dicom_writer import SOP_CLASSES, TRANSFER_SYNTAXES, dicom_uid, write_dicom
from .markups import read_markups, write_markups
from .reading import (
    SPACING_SOURCES,
    LoadRadiograph,
    LoadRadiographD,
    LoadRadiographd,
    LoadRadiographDict,
    RadiographReadError,
    describe_radiograph,
    read_radiograph,
)

__all__ = [
    "SPACING_SOURCES",
    "RadiographReadError",
    "read_radiograph",
    "describe_radiograph",
    "LoadRadiograph",
    "LoadRadiographd",
    "LoadRadiographD",
    "LoadRadiographDict",
    "write_dicom",
    "dicom_uid",
    "TRANSFER_SYNTAXES",
    "SOP_CLASSES",
    "write_markups",
    "read_markups",
]
