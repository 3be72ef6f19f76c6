"""Reading knee radiographs (DICOM and the formats SimpleITK reads) and writing DICOM.

See ``docs/reading.md`` for the conventions, the spacing precedence and the errors. The MONAI
loaders (``LoadRadiograph``/``LoadRadiographd``) load on first use (PEP 562), so that reading with
:func:`read_image` comes without MONAI (:mod:`kneel_monai.image`).
"""

from ..lazy import lazy_exports
from .dicom_writer import SOP_CLASSES, TRANSFER_SYNTAXES, dicom_uid, write_dicom
from .markups import read_markups, write_markups
from .reading import SPACING_SOURCES, RadiographReadError, describe_radiograph, read_image, read_radiograph

_loaders, __getattr__, __dir__ = lazy_exports(__name__, {
    "loaders": ["LoadRadiograph", "LoadRadiographd", "LoadRadiographD", "LoadRadiographDict"]}, globals())

__all__ = [
    "SPACING_SOURCES",
    "RadiographReadError",
    "read_radiograph",
    "read_image",
    "describe_radiograph",
    *_loaders,
    "write_dicom",
    "dicom_uid",
    "TRANSFER_SYNTAXES",
    "SOP_CLASSES",
    "write_markups",
    "read_markups",
]
