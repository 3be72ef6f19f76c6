"""A Slicer volume node → the radiograph the model sees: checked pixels, the true pixel spacing, a file.

Nothing here changes the scene. :func:`prepare_radiograph` refuses what is not a 2-D grey-level
radiograph with a :class:`KneelInputError` whose message is written for the module panel.

The spacing trap: Slicer reads DX/CR DICOM through ITK/GDCM, which takes the spacing from one
tag (for these SOP classes ImagerPixelSpacing; a file with only PixelSpacing is loaded with
1 mm pixels — older readers did the reverse). :func:`check_spacing` reads the instance's own
tags with :func:`kneel_monai.io.describe_radiograph` (ImagerPixelSpacing, else PixelSpacing: the
same rule as ``kneel predict``) and, when they disagree with the volume, returns the true spacing
with a message; the logic then corrects the volume node's spacing (keeping its origin and
directions) when it adds the results, so that positions, rulers and measurements in Slicer agree.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .geometry import ijk_to_ras_matrix, volume_spacing_row_col

__all__ = [
    "MIN_SIDE_PX", "KneelInputError", "RadiographInput", "SpacingCheck", "check_spacing", "describe_source",
    "dicom_view_tags", "find_source_file", "ijk_to_ras_with_spacing", "prepare_radiograph", "radiograph_pixels",
    "write_nrrd",
]

#: a radiograph narrower than this (pixels) is refused
MIN_SIDE_PX = 32
_SPACING_RTOL = 1e-4


class KneelInputError(ValueError):
    """Something the user gave cannot be used; ``str(error)`` is the message for the panel."""


@dataclass
class SpacingCheck:
    """The pixel spacing to use and where it came from.

    ``spacing_mm`` and ``volume_spacing_mm`` are ``(row, col)``; ``source`` is the DICOM tag
    (``"ImagerPixelSpacing"`` / ``"PixelSpacing"``) or ``"volume"`` (the volume node's own
    spacing, unchecked); ``corrected`` says the volume's spacing is wrong and is to be replaced.
    """

    spacing_mm: tuple[float, float]
    source: str
    volume_spacing_mm: tuple[float, float]
    corrected: bool = False
    source_file: str | None = None
    message: str = ""


@dataclass
class RadiographInput:
    """What a prediction needs from a volume node (copied: the node may change meanwhile)."""

    volume_id: str
    volume_name: str
    pixels: np.ndarray  # (H, W) float32, rows then columns, as stored in the volume
    spacing: SpacingCheck
    ijk_to_ras: np.ndarray  # (4, 4) with the true spacing
    messages: list[str] = field(default_factory=list)
    #: the source DICOM's ImageLaterality / ViewPosition / PatientOrientation, by DICOM keyword
    #: (see :func:`dicom_view_tags`)
    header_tags: dict[str, str] = field(default_factory=dict)

    @property
    def image_label(self) -> str:
        """What the results call the image: its source file, else the volume's name."""
        return self.spacing.source_file or self.volume_name


def _name(volume_node) -> str:
    return volume_node.GetName() or volume_node.GetID() or "the volume"


def _fmt(spacing: tuple[float, float]) -> str:
    row, col = spacing
    return f"{row:g} × {col:g}" if not math.isclose(row, col) else f"{row:g}"


def radiograph_pixels(volume_node) -> np.ndarray:
    """The ``(H, W)`` float32 pixels of a 2-D grey-level volume node, or a :class:`KneelInputError`."""
    if volume_node is None:
        raise KneelInputError("No input volume selected: load a radiograph (Add Data or the DICOM module) and "
                              "choose it as the input volume.")
    name = _name(volume_node)
    if not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise KneelInputError(f"'{name}' is a {volume_node.GetClassName()}, not an image volume.")
    if volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise KneelInputError(f"'{name}' is a label map (a segmentation), not a radiograph.")
    image = volume_node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise KneelInputError(f"'{name}' has no image data.")
    components = image.GetNumberOfScalarComponents()
    if components != 1 or volume_node.IsA("vtkMRMLVectorVolumeNode"):
        raise KneelInputError(
            f"'{name}' is a colour image ({components} components per pixel, e.g. an RGB screenshot or photo); "
            "a radiograph has one grey-level channel. Load the original DICOM, or convert the image to a "
            "scalar volume first (Vector to Scalar Volume module).")
    n_i, n_j, n_k = image.GetDimensions()
    if n_k != 1:
        raise KneelInputError(
            f"'{name}' is a 3-D volume ({n_i} × {n_j} × {n_k} voxels, {n_k} slices), e.g. a CT or MRI; this module "
            "needs a 2-D radiograph (one slice).")
    if min(n_i, n_j) < MIN_SIDE_PX:
        raise KneelInputError(f"'{name}' is only {n_i} × {n_j} pixels; a knee radiograph is far larger.")
    from vtk.util.numpy_support import vtk_to_numpy

    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(n_j, n_i).astype(np.float32)
    if not np.isfinite(pixels).all():
        raise KneelInputError(f"'{name}' contains NaN or infinite pixel values.")
    if float(pixels.min()) == float(pixels.max()):
        raise KneelInputError(f"'{name}' is a constant image (every pixel is {float(pixels.min()):g}).")
    return pixels


def find_source_file(volume_node, file_for_instance: Callable[[str], str] | None = None) -> str | None:
    """The file the volume was loaded from, if it can still be found.

    A volume loaded by Slicer's DICOM module names its instances in the ``DICOM.instanceUIDs``
    attribute; ``file_for_instance`` (``slicer.dicomDatabase.fileForInstance`` in Slicer) finds
    the file. A volume loaded with Add Data has a storage node with the file name.
    """
    uids = (volume_node.GetAttribute("DICOM.instanceUIDs") or "").split()
    if uids and file_for_instance is not None:
        path = file_for_instance(uids[0])
        if path and os.path.isfile(path):
            return str(path)
    storage = volume_node.GetStorageNode()
    if storage is not None:
        path = storage.GetFileName()
        if path and os.path.isfile(path):
            return str(path)
    return None


def _same(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(math.isclose(x, y, rel_tol=_SPACING_RTOL) for x, y in zip(a, b))


def _is_this_volume(info: dict, volume_node) -> bool:
    """Whether a source file's header (``describe_radiograph``) is of this volume's image: the same rows × columns."""
    n_i, n_j, _ = volume_node.GetImageData().GetDimensions()
    return tuple(info.get("shape") or ()) == (n_j, n_i)


def describe_source(source_file: str | None) -> tuple[dict | None, str]:
    """What ``kneel_monai``'s reader sees in a volume's source file (``describe_radiograph``), read once for both
    the spacing check and the view tags: ``(info, "")``, ``(None, why it could not be read)``, or ``(None, "")``
    without a source file."""
    if not source_file:
        return None, ""
    from kneel_monai.io import describe_radiograph

    try:
        return describe_radiograph(source_file), ""
    except Exception as err:  # noqa: BLE001 — an unreadable source file only means "not checked"
        return None, f"Could not read {source_file} to check the pixel spacing ({err})."


def check_spacing(volume_node, source_file: str | None = None, field_width_mm: float | None = None,
                  described: tuple[dict | None, str] | None = None) -> SpacingCheck:
    """The true pixel spacing of the volume's radiograph (see the module docstring).

    ``field_width_mm``: the imaged field's width, for a volume Slicer loaded with 1 mm pixels and no DICOM
    spacing to check them against (a JPEG/PNG export): its spacing becomes the width over its columns, as
    ``kneel predict --field-width-mm`` does; a spacing from DICOM tags or the volume's own (not 1 mm) wins.
    ``described``: :func:`describe_source` of ``source_file`` when the caller has it already.
    """
    field = None
    if field_width_mm is not None:
        from kneel_monai.io.reading import FieldSize  # the rule of `kneel predict --field-width-mm`

        try:
            field = FieldSize(width_mm=field_width_mm)
        except ValueError as err:
            raise KneelInputError(f"Field width: {err}.") from None
    volume = volume_spacing_row_col(volume_node)
    name = _name(volume_node)
    info, note = describe_source(source_file) if described is None else described
    if info is not None and info.get("format") == "DICOM":  # None: no source file, or unreadable
        n_i, n_j, _ = volume_node.GetImageData().GetDimensions()
        true, source = info.get("pixel_spacing_mm"), info.get("spacing_source")
        if not _is_this_volume(info, volume_node):
            note = (f"The DICOM file {Path(source_file).name} is {info.get('shape')} pixels but the volume "
                    f"{n_j} × {n_i}: its spacing tags were not used.")
        elif true is None:
            note = (f"The DICOM file {Path(source_file).name} has no ImagerPixelSpacing or PixelSpacing; "
                    f"using the volume's {_fmt(volume)} mm pixels.")
        else:
            true = (float(true[0]), float(true[1]))
            if _same(true, volume):
                return SpacingCheck(volume, source, volume, False, source_file, "")
            return SpacingCheck(true, source, volume, True, source_file, (
                f"Pixel spacing corrected: Slicer loaded '{name}' with {_fmt(volume)} mm pixels, but its DICOM "
                f"{source} says {_fmt(true)} mm. Using {_fmt(true)} mm; the volume's spacing is set to it."))
    if _same(volume, (1.0, 1.0)) and field is not None:
        columns, rows, _ = volume_node.GetImageData().GetDimensions()
        spacing, source = field.spacing_for(rows, columns)
        true = (spacing, spacing)
        return SpacingCheck(true, source, volume, True, source_file, (note + " " if note else "") + (
            f"Pixel spacing from the field width: Slicer loaded '{name}' with 1 mm pixels and there is no spacing "
            f"to check them against; {field_width_mm:g} mm over its {columns} columns gives {_fmt(true)} mm. "
            "The volume's spacing is set to it."))
    if _same(volume, (1.0, 1.0)):
        note = (note + " " if note else "") + (
            f"'{name}' has 1 mm pixels and no DICOM file to check them against: lengths assume 1 mm pixels. If "
            "that is wrong, load the radiograph from DICOM or set its spacing in the Volumes module.")
    return SpacingCheck(volume, "volume", volume, False, source_file, note)


def dicom_view_tags(volume_node, source_file: str | None,
                    described: tuple[dict | None, str] | None = None) -> dict[str, str]:
    """What the volume's source DICOM says of its view: ``{"ImageLaterality": ..., "ViewPosition": ...,
    "PatientOrientation": ...}`` (the tags it has). The prediction takes a lone knee's side from the first,
    refuses a lateral or oblique view by the second and reads a mirrored display back to the radiological
    convention by the third, as ``kneel predict`` reading the DICOM itself does. Empty without a DICOM source
    file, when it cannot be read (``check_spacing`` says why), or when the file is not this volume's image
    (another size). ``described``: :func:`describe_source` of ``source_file`` when the caller has it already."""
    info, _ = describe_source(source_file) if described is None else described
    if info is None or info.get("format") != "DICOM" or not _is_this_volume(info, volume_node):
        return {}
    tags = {"ImageLaterality": info.get("laterality"), "ViewPosition": info.get("view_position"),
            "PatientOrientation": info.get("patient_orientation")}
    return {k: str(v).strip() for k, v in tags.items() if v is not None and str(v).strip()}


def ijk_to_ras_with_spacing(ijk_to_ras: np.ndarray, spacing_row_col: tuple[float, float]) -> np.ndarray:
    """The same origin and directions with the pixel spacing ``(row, col)`` (the slice spacing kept)."""
    m = np.array(ijk_to_ras, dtype=np.float64)
    for column, spacing in ((0, spacing_row_col[1]), (1, spacing_row_col[0])):
        norm = np.linalg.norm(m[:3, column])
        m[:3, column] *= float(spacing) / norm
    return m


def prepare_radiograph(volume_node, file_for_instance: Callable[[str], str] | None = None,
                       field_width_mm: float | None = None) -> RadiographInput:
    """Check a volume node and copy out what a prediction needs (the scene is not changed)."""
    pixels = radiograph_pixels(volume_node)
    source_file = find_source_file(volume_node, file_for_instance)
    described = describe_source(source_file)  # the source file's header, read once for both checks
    spacing = check_spacing(volume_node, source_file, field_width_mm, described)
    geometry = ijk_to_ras_matrix(volume_node)
    if spacing.corrected:
        geometry = ijk_to_ras_with_spacing(geometry, spacing.spacing_mm)
    messages = [spacing.message] if spacing.message else []
    return RadiographInput(volume_node.GetID(), _name(volume_node), pixels, spacing, geometry, messages,
                           dicom_view_tags(volume_node, source_file, described))


def write_nrrd(pixels: np.ndarray, spacing_row_col: tuple[float, float], path: str | os.PathLike,
               fields: dict[str, str] | None = None) -> Path:
    """Write ``(H, W)`` pixels as a float32 NRRD whose header carries the spacing (what ``kneel predict`` reads)
    and ``fields`` as NRRD key/value pairs (``ImageLaterality:=R``: ``kneel_monai``'s reader takes the DICOM
    keywords ImageLaterality, ViewPosition and PatientOrientation from them)."""
    arr = np.ascontiguousarray(pixels, dtype="<f4")
    if arr.ndim != 2:
        raise ValueError(f"pixels must be (H, W), got shape {arr.shape}")
    h, w = arr.shape
    row, col = (float(v) for v in spacing_row_col)
    pairs = ""
    for key, value in (fields or {}).items():
        if not key.isalnum() or not str(value).isprintable() or ":=" in str(value):
            raise ValueError(f"a NRRD field must be an alphanumeric key and a one-line value, got {key!r}: {value!r}")
        pairs += f"{key}:={value}\n"
    header = ("NRRD0004\n# a radiograph written by the Kneel Landmarks Slicer module\n"
              f"type: float\ndimension: 2\nsizes: {w} {h}\nspacings: {col!r} {row!r}\n"
              f"encoding: raw\nendian: little\n{pairs}\n")
    path = Path(path)
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(arr.tobytes())
    return path
