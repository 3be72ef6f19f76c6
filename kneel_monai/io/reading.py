"""Read a knee radiograph, with its pixel spacing, into one channel-first ``MetaTensor``.

What comes out (the project's convention, see ``docs/reading.md``):

* a :class:`monai.data.MetaTensor` of shape ``(1, H, W)`` (rows then columns), float32
  (:func:`read_radiograph`; :func:`read_image` gives the same pixels, affine and metadata as an
  :class:`~kneel_monai.image.AffineImage` without importing MONAI, for ``kneel predict``),
  in *display* intensities: higher = brighter bone. ``MONOCHROME1`` images are inverted so
  that every result looks like ``MONOCHROME2``.
* ``affine`` (float64, 3×3) maps the homogeneous pixel index ``(row, col, 1)`` to image-plane
  millimetres ``(mm_row, mm_col, 1)``: ``diag(row_spacing, col_spacing, 1)``, no translation.
* ``meta``: ``pixel_spacing_mm`` ``(row, col)``, ``spacing_source`` (one of
  :data:`SPACING_SOURCES`), ``filename_or_obj``, ``format``, ``photometric_interpretation``,
  ``transfer_syntax``, ``original_shape``, ``patient_id``, ``laterality``,
  ``series_description``, ``modality`` (the DICOM-only ones are ``None`` for other formats).

DICOM is recognised by content (the ``DICM`` marker after the 128-byte preamble, or a
preamble-less data set that pydicom parses), never by the file name. Everything else goes
through SimpleITK. Every failure is a :class:`RadiographReadError` whose message starts with
the file's path.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from ..image import AffineImage

__all__ = [
    "SPACING_SOURCES",
    "RadiographReadError",
    "read_radiograph",
    "read_image",
    "describe_radiograph",
    "ReadLimits",
    "FieldSize",
]

#: a spacing argument: one number (square pixels) or ``(row, col)`` in mm, or ``None``
SpacingLike = Union[float, tuple[float, float], None]

@dataclass(frozen=True)
class ReadLimits:
    """What a knee radiograph can be. A file beyond these is refused from its header, before its pixels
    are decoded or anything is resampled: a 760 KB deflated DICOM can declare 20,000² pixels, and a
    spacing typed in the wrong unit (100 mm) makes every later resampling enormous.

    Attributes:
        max_pixels: pixels (× channels) a file may hold; the largest CR/DR detectors give about
            4,300 × 3,500 (15 megapixels). ``kneel predict --max-megapixels`` raises it.
        spacing_range_mm: the pixel spacings accepted, in mm (knee films: about 0.1–0.2; exports
            scaled down: up to about 1).
        max_field_mm: the longest side of the field, in mm (a long-leg film is about 1,300).
    """

    max_pixels: int = 100_000_000
    spacing_range_mm: tuple[float, float] = (0.01, 5.0)
    max_field_mm: float = 2500.0

    def check_pixels(self, path: Path, shape: tuple[int, int], channels: int = 1) -> None:
        n = int(shape[0]) * int(shape[1]) * max(int(channels), 1)
        if n > self.max_pixels:
            layers = f" × {channels} channels" if channels > 1 else ""
            raise RadiographReadError(path, f"{shape[0]} × {shape[1]} pixels{layers}"
                                            f" ({n / 1e6:.0f} megapixels) is more than a knee radiograph holds (limit "
                                            f"{self.max_pixels / 1e6:g}; --max-megapixels raises it); not decoded")

    def check_geometry(self, path: Path, shape: tuple[int, int], spacing: tuple[float, float]) -> None:
        lo, hi = self.spacing_range_mm
        if not (lo <= min(spacing) and max(spacing) <= hi):
            raise RadiographReadError(path,
                                      f"pixel spacing {spacing[0]:g} × {spacing[1]:g} mm is outside {lo:g}–{hi:g} "
                                            "mm, not a radiograph's (a wrong unit or a typo?)")
        field = max(shape[0] * spacing[0], shape[1] * spacing[1])
        if field > self.max_field_mm:
            raise RadiographReadError(path, f"a field of {field:.0f} mm ({shape[0]} × {shape[1]} pixels at "
                                            f"{spacing[0]:g} × {spacing[1]:g} mm) is larger than any radiograph "
                                            f"(limit {self.max_field_mm:g} mm): is the spacing right?")


#: where ``meta["spacing_source"]`` says the spacing came from (``field_*``: :class:`FieldSize`)
SPACING_SOURCES = ("ImagerPixelSpacing", "PixelSpacing", "user", "header", "field_width", "field_height")


@dataclass(frozen=True)
class FieldSize:
    """The width or the height of the imaged field, in mm, for files that carry no pixel spacing.

    JPEG/PNG exports have none, and one ``spacing_mm`` for a folder of exports of different sizes is
    wrong for most of them; the field a user knows (a bilateral knee film is about 35–43 cm wide, a
    single-knee one 24–30 cm tall) gives each file its own: the field over that file's own pixels
    (square pixels). Files with a spacing of their own keep it. A guess 10 % off changes which
    marginal knees are found (docs/real_knees.md, robustness), so give the best one known.
    """

    width_mm: float | None = None
    height_mm: float | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.width_mm, self.height_mm) if v is not None]
        if len(given) != 1 or not (math.isfinite(given[0]) and 10.0 <= given[0] <= 2000.0):
            raise ValueError("give the field's width or its height (one of them), in mm between 10 and 2000; got "
                             f"width {self.width_mm}, height {self.height_mm}")

    def spacing_for(self, rows: int, columns: int) -> tuple[float, str]:
        """``(spacing mm, spacing source)`` of an image of ``rows`` × ``columns`` pixels filling the field."""
        if self.width_mm is not None:
            return self.width_mm / columns, "field_width"
        return self.height_mm / rows, "field_height"  # type: ignore[operator]


def _spacing_to_use(path: Path, header: dict[str, Any], spacing_mm: tuple[float, float] | None,
                    field: FieldSize | None) -> tuple[tuple[float, float], str]:
    """``(spacing, spacing source)`` of a file: the caller's, else the file's own, else the field's over the
    file's pixels; a file with none of them is refused (the same rule for DICOM and the other formats)."""
    if spacing_mm is not None:
        return spacing_mm, "user"
    if header["pixel_spacing_mm"] is not None:
        for note in header["spacing_notes"]:
            warnings.warn(f"{path}: {note}; using {header['spacing_source']}", stacklevel=4)
        return header["pixel_spacing_mm"], header["spacing_source"]
    if field is not None:
        spacing, source = field.spacing_for(*header["shape"])
        return (spacing, spacing), source
    detail = "; ".join(header["spacing_notes"]) or "ImagerPixelSpacing/PixelSpacing absent"
    raise RadiographReadError(path, f"no pixel spacing ({detail}); pass spacing_mm")


#: DICOM spacing attributes, in the order they are tried (the original release's order)
DICOM_SPACING_TAGS = ("ImagerPixelSpacing", "PixelSpacing")

# SimpleITK ImageIOs whose header carries a spacing we trust (when the header sets it)
_HEADER_SPACING_IOS = {"NrrdImageIO": "NRRD", "MetaImageIO": "MetaImage", "NiftiImageIO": "NIfTI"}
_IO_FORMATS = {
    "PNGImageIO": "PNG",
    "JPEGImageIO": "JPEG",
    "TIFFImageIO": "TIFF",
    "BMPImageIO": "BMP",
    **_HEADER_SPACING_IOS,
}

# Leading bytes of formats that are certainly not a preamble-less DICOM data set.
_NON_DICOM_MAGIC = (
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"\xff\xd8\xff",  # JPEG
    b"II*\x00",  # TIFF little endian
    b"MM\x00*",  # TIFF big endian
    b"II+\x00",  # BigTIFF
    b"MM\x00+",
    b"NRRD",  # NRRD
    b"\x1f\x8b",  # gzip (.nii.gz, ...)
    b"GIF8",
)

# Which packages decode which compressed transfer syntax in pydicom 2.x (for error messages).
_LIBJPEG = "pylibjpeg + pylibjpeg-libjpeg (or python-gdcm)"
_OPENJPEG = "pylibjpeg + pylibjpeg-openjpeg (or python-gdcm)"
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": _LIBJPEG + " — or Pillow",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": _LIBJPEG,  # JPEG extended (12 bit)
    "1.2.840.10008.1.2.4.57": _LIBJPEG,  # JPEG lossless process 14
    "1.2.840.10008.1.2.4.70": _LIBJPEG,  # JPEG lossless process 14 SV1
    "1.2.840.10008.1.2.4.80": _LIBJPEG,  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": _LIBJPEG,  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": _OPENJPEG,  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": _OPENJPEG,  # JPEG 2000
    "1.2.840.10008.1.2.5": "numpy (pydicom's own RLE decoder) or pylibjpeg + pylibjpeg-rle",
}
_HTJ2K = "pydicom>=3 with pylibjpeg-openjpeg decodes HTJ2K; pydicom {version} does not"
_DECODER_HINTS = {
    "1.2.840.10008.1.2.4.201": _HTJ2K,  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": _HTJ2K,  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": _HTJ2K,  # HTJ2K
}
_NO_PYDICOM2_DECODER = (
    "pydicom {version} has no decoder for this transfer syntax; convert the file to an "
    "uncompressed or JPEG/JPEG 2000/RLE syntax first (e.g. with dcmtk or gdcmconv)"
)


class RadiographReadError(ValueError):
    """A file that cannot be read as a single grey-level radiograph.

    ``str(error)`` is ``"<path>: <problem>"``; ``error.path`` and ``error.problem`` hold the two.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # keep it picklable (DataLoader workers pass exceptions around)
        return (type(self), (self.path, self.problem))


# --------------------------------------------------------------------------------------
# small helpers


def _as_spacing(value: Any, what: str = "spacing_mm") -> tuple[float, float] | None:
    """``None`` | number | ``(row, col)`` (sequence, array or tensor) → ``(row, col)`` floats."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2 or not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        raise ValueError(
            f"{what} must be a positive number or a (row, col) pair of positive numbers in mm, "
            f"got {value!r}"
        )
    return float(arr[0]), float(arr[1])


def _spacing_affine(spacing: tuple[float, float]) -> torch.Tensor:
    return torch.diag(torch.tensor([spacing[0], spacing[1], 1.0], dtype=torch.float64))


def _check_file(path: Path) -> None:
    if not path.exists():
        if path.is_symlink():
            raise RadiographReadError(path, "a symbolic link to nothing (its target is missing, or links loop)")
        raise RadiographReadError(path, "file not found")
    if path.is_dir():
        raise RadiographReadError(path, "is a directory, not an image file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise RadiographReadError(path, f"cannot access the file ({e.strerror or e})") from e
    if size == 0:
        raise RadiographReadError(path, "empty file (0 bytes)")


def has_dicom_preamble(head: bytes) -> bool:
    """Whether a file's first 132 bytes are a DICOM preamble (128 bytes, then ``DICM``)."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def _sniff_dicom(path: Path) -> tuple[bool, bool]:
    """``(is_dicom, has_preamble)``, judged by content, not by name."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as e:
        raise RadiographReadError(path, f"cannot read the file ({e.strerror or e})") from e
    if has_dicom_preamble(head):
        return True, True
    if head.startswith(_NON_DICOM_MAGIC):
        return False, False
    # A preamble-less data set (an old or raw DICOM stream): accept it if pydicom, forced,
    # finds attributes that only an image data set has.
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
            looks_dicom = ("Rows" in ds and "Columns" in ds) or "SOPClassUID" in ds
    except Exception:
        return False, False
    return bool(looks_dicom), False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # SimpleITK puts the useful sentence on the last line ("sitk::ERROR: ...")
    for line in reversed(lines):
        if "ERROR" in line:
            return line.split("ERROR:", 1)[-1].strip()
    return lines[0] if lines else type(exc).__name__


# --------------------------------------------------------------------------------------
# DICOM


def _tag_text(ds, keyword: str) -> str | None:
    if keyword not in ds:
        return None
    value = ds[keyword].value
    if value is None or value == "":
        return None
    return str(value).strip() or None


def _patient_orientation(ds) -> str | None:
    """PatientOrientation as DICOM writes it (``L\\F``: the patient direction of increasing column, then row)."""
    value = ds.get("PatientOrientation", None)
    if value is None or value == "":
        return None
    values = [value] if isinstance(value, str) else list(value)
    parts = [part.strip().upper() for v in values for part in str(v).split("\\")]
    return "\\".join(parts) if any(parts) else None


def _int_tag(ds, keyword: str, default: int) -> int:
    value = ds.get(keyword, None)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _as_list(value: Any) -> list:
    """A DICOM value as a list (multi-valued elements are iterable, single values are not)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _parse_dicom_spacing(value: Any) -> tuple[float, float] | None:
    try:
        values = [float(v) for v in _as_list(value)]
    except (TypeError, ValueError):
        return None
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        return None
    return values[0], values[1]


def _raw_text(ds, keyword: str) -> str:
    return "\\".join(str(v) for v in _as_list(ds[keyword].value))


def _dicom_spacing(ds) -> tuple[tuple[float, float] | None, str | None, list[str]]:
    """The file's spacing: ImagerPixelSpacing, else PixelSpacing. Invalid values are skipped
    (and reported in the returned notes)."""
    notes = []
    for tag in DICOM_SPACING_TAGS:
        if tag in ds and ds[tag].value not in (None, ""):
            parsed = _parse_dicom_spacing(ds[tag].value)
            if parsed is not None:
                return parsed, tag, notes
            notes.append(f"{tag} '{_raw_text(ds, tag)}' is not two positive numbers")
    return None, None, notes


def _transfer_syntax(ds):
    """The data set's transfer syntax UID; for a preamble-less file without file meta, the
    syntax pydicom detected while parsing (and it is recorded in ``ds.file_meta``)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return UID(str(meta.TransferSyntaxUID))
    if ds.is_implicit_VR:
        ts = ImplicitVRLittleEndian
    elif ds.is_little_endian:
        ts = ExplicitVRLittleEndian
    else:
        ts = ExplicitVRBigEndian
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = ts
    return ts


def _decoders_for(ts) -> list[str]:
    """Names of the installed pydicom pixel-data handlers that can decode ``ts``."""
    import pydicom.config

    names = []
    for handler in pydicom.config.pixel_data_handlers:
        try:
            if handler.is_available() and handler.supports_transfer_syntax(ts):
                names.append(getattr(handler, "HANDLER_NAME", handler.__name__.rsplit(".", 1)[-1]))
        except Exception:  # a broken optional plugin must not break reading
            continue
    return names


def _missing_decoder_message(ts) -> str:
    import pydicom

    packages = _DECODER_PACKAGES.get(str(ts))
    if str(ts) in _DECODER_HINTS:
        hint = _DECODER_HINTS[str(ts)].format(version=pydicom.__version__)
    elif packages is None:
        hint = _NO_PYDICOM2_DECODER.format(version=pydicom.__version__)
    else:
        hint = f"install {packages} to decode it"
    named = f"'{ts.name}' ({ts})" if ts.name != str(ts) else f"'{ts}'"
    return f"no installed decoder for the transfer syntax {named}; {hint}"


_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _dicom_header(path: Path, ds) -> dict[str, Any]:
    """What the DICOM header says, and the problems that rule it out, without decoding."""
    ts = _transfer_syntax(ds)
    rows = _int_tag(ds, "Rows", 0)
    cols = _int_tag(ds, "Columns", 0)
    samples = _int_tag(ds, "SamplesPerPixel", 1)
    frames = _int_tag(ds, "NumberOfFrames", 1)
    bits_allocated = _int_tag(ds, "BitsAllocated", 0)
    bits_stored = _int_tag(ds, "BitsStored", bits_allocated)
    representation = _int_tag(ds, "PixelRepresentation", 0)
    photometric = (_tag_text(ds, "PhotometricInterpretation") or "").upper() or None
    spacing, spacing_tag, spacing_notes = _dicom_spacing(ds)
    laterality = _tag_text(ds, "ImageLaterality") or _tag_text(ds, "Laterality")
    view_position = (_tag_text(ds, "ViewPosition") or "").strip().upper() or None
    orientation = _patient_orientation(ds)
    has_pixels = any(k in ds for k in _PIXEL_KEYWORDS)
    decoders = _decoders_for(ts) if has_pixels else []

    problems: list[str] = []
    if not has_pixels:
        problems.append("no pixel data (the DICOM file has no Pixel Data element)")
    if samples > 1 or (
        photometric is not None and photometric not in ("MONOCHROME1", "MONOCHROME2")
    ):
        problems.append(
            f"not a grey-level image (SamplesPerPixel {samples}, PhotometricInterpretation "
            f"{photometric}); RGB/multi-channel images are not radiographs this reader accepts"
        )
    if frames > 1:
        problems.append(
            f"multi-frame image (NumberOfFrames {frames}); a single 2-D radiograph is expected"
        )
    if rows <= 0 or cols <= 0:
        problems.append(f"zero-size image (Rows {rows}, Columns {cols})")
    if has_pixels and "PixelData" in ds and bits_allocated not in (8, 16, 32):
        problems.append(f"unsupported BitsAllocated {bits_allocated} (8, 16 or 32 are read)")
    if has_pixels and not decoders:
        problems.append(_missing_decoder_message(ts))

    rescale = None
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        rescale = (_float_tag(ds, "RescaleSlope", 1.0), _float_tag(ds, "RescaleIntercept", 0.0))
    return {
        "path": str(path),
        "format": "DICOM",
        "shape": (rows, cols),
        "number_of_frames": frames,
        "samples_per_pixel": samples,
        "pixel_spacing_mm": spacing,
        "spacing_source": spacing_tag,
        "spacing_notes": spacing_notes,
        "imager_pixel_spacing_mm": _parse_dicom_spacing(ds.ImagerPixelSpacing)
        if ds.get("ImagerPixelSpacing")
        else None,
        "pixel_spacing_tag_mm": _parse_dicom_spacing(ds.PixelSpacing)
        if ds.get("PixelSpacing")
        else None,
        "photometric_interpretation": photometric,
        "transfer_syntax": ts.name,
        "transfer_syntax_uid": str(ts),
        "decoder": decoders[0] if decoders else None,
        "bits_allocated": bits_allocated,
        "bits_stored": bits_stored,
        "pixel_representation": representation,
        "rescale": rescale,
        "modality": _tag_text(ds, "Modality"),
        "patient_id": _tag_text(ds, "PatientID"),
        "laterality": laterality,
        "view_position": view_position,
        "patient_orientation": orientation,
        "series_description": _tag_text(ds, "SeriesDescription"),
        "problems": problems,
    }


def _float_tag(ds, keyword: str, default: float) -> float:
    value = ds.get(keyword, None)
    if value is None or value == "":
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def _read_dicom_dataset(path: Path, force: bool, **kwargs):
    """dcmread that turns "end of file" warnings (a truncated file) into an error."""
    import pydicom

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, force=force, **kwargs)
        except Exception as e:
            raise RadiographReadError(
                path, f"corrupt or truncated DICOM file ({type(e).__name__}: {_first_line(e)})"
            ) from e
    for w in caught:
        text = str(w.message)
        if "end of file" in text.lower() or "eof" in text.lower():
            text = re.sub(r"\s+in file .*$", "", text)  # pydicom appends the path
            raise RadiographReadError(path, f"truncated DICOM file ({text})")
    for w in caught:  # pass the others on, naming the file (a cohort's warnings are otherwise anonymous)
        text = str(w.message)
        warnings.warn(text if str(path) in text else f"{path}: {text}", w.category, stacklevel=3)
    return ds


def _check_inflated_size(path: Path, limits: ReadLimits) -> None:
    """A deflated DICOM is inflated whole by pydicom before its header can be read: 400 KB can hold
    400 MB of pixels. Its inflated size is counted first, in bounded chunks, never held."""
    import zlib

    import pydicom
    from pydicom.filereader import _read_file_meta_info

    try:
        with open(path, "rb") as fh:
            if fh.read(132)[128:] != b"DICM":
                return
            meta = _read_file_meta_info(fh)
            if meta.get("TransferSyntaxUID") != pydicom.uid.DeflatedExplicitVRLittleEndian:
                return
            budget = 2 * limits.max_pixels + (1 << 20)  # 16-bit pixels at the limit, plus the header
            inflate, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
            while not inflate.eof and (chunk := fh.read(1 << 20)):
                data = chunk
                while data and not inflate.eof:
                    total += len(inflate.decompress(data, 1 << 24))
                    data = inflate.unconsumed_tail
                    if total > budget:
                        raise RadiographReadError(path, f"the deflated DICOM inflates to more than {budget / 1e6:.0f} "
                                                        "MB, more than a knee radiograph holds (--max-megapixels "
                                                        "raises the limit); not decoded")
    except RadiographReadError:
        raise
    except (OSError, zlib.error, ValueError, KeyError, AttributeError):
        return  # not readable this way: the reader says what is wrong


def _stored_range(bits_stored: int, signed: bool) -> tuple[float, float]:
    if signed:
        return -float(2 ** (bits_stored - 1)), float(2 ** (bits_stored - 1) - 1)
    return 0.0, float(2**bits_stored - 1)


def _mask_to_bits_stored(arr: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Keep the low ``bits_stored`` bits (the rest may hold overlays or garbage) and
    sign-extend signed data."""
    nbits = arr.dtype.itemsize * 8
    if arr.dtype.kind not in "iu" or bits_stored <= 0 or bits_stored >= nbits:
        return arr
    low = arr.astype(np.int64) & ((1 << bits_stored) - 1)  # two's complement for negatives
    if signed:
        low = np.where(low >= (1 << (bits_stored - 1)), low - (1 << bits_stored), low)
    return low


def _modality_transform(ds, values: np.ndarray) -> np.ndarray:
    """Rescale slope/intercept (or a Modality LUT when the file has one instead)."""
    if "RescaleSlope" not in ds and "RescaleIntercept" not in ds and "ModalityLUTSequence" in ds:
        from pydicom.pixel_data_handlers.util import apply_modality_lut

        return np.asarray(apply_modality_lut(values, ds), dtype=np.float64)
    slope = _float_tag(ds, "RescaleSlope", 1.0)
    intercept = _float_tag(ds, "RescaleIntercept", 0.0)
    if slope == 0:
        slope = 1.0
    return values.astype(np.float64) * slope + intercept


def _native_pixel_bytes(path: Path, ds, header: dict[str, Any]) -> None:
    """Uncompressed pixel data must hold what Rows × Columns × … say: fewer bytes is a truncated
    file, more a header that describes less than is there (both would be read wrongly)."""
    ts = _transfer_syntax(ds)
    if getattr(ts, "is_compressed", True) or "PixelData" not in ds:
        return
    rows, cols = header["shape"]
    expected = rows * cols * header["samples_per_pixel"] * header["number_of_frames"] * header["bits_allocated"] // 8
    actual = len(ds.PixelData)
    if actual < expected:
        raise RadiographReadError(path, f"truncated DICOM: the pixel data holds {actual} bytes, Rows {rows} × "
                                        f"Columns {cols} need {expected}")
    if actual > expected + 1:  # one padding byte makes an odd length even
        raise RadiographReadError(path, f"the pixel data holds {actual} bytes but Rows {rows} × Columns {cols} "
                                        f"describe {expected}: a wrong header (Rows/Columns) or a corrupt file")


def _read_dicom(path: Path, force: bool, spacing_mm: tuple[float, float] | None,
                limits: ReadLimits | None = None, field: FieldSize | None = None) -> AffineImage:
    limits = limits or ReadLimits()
    _check_inflated_size(path, limits)
    ds = _read_dicom_dataset(path, force)
    header = _dicom_header(path, ds)
    problems = list(header["problems"])
    if header["problems"] and header["problems"][0].startswith("no pixel data"):
        # a Pixel Data tag in the bytes that pydicom could not read = truncated/corrupt
        with open(path, "rb") as f:
            raw = f.read()
        if b"\xe0\x7f\x10\x00" in raw or b"\x7f\xe0\x00\x10" in raw:
            problems[0] = (
                "corrupt or truncated DICOM file (its Pixel Data element could not be read)"
            )
    if problems:
        raise RadiographReadError(path, problems[0])

    spacing, source = _spacing_to_use(path, header, spacing_mm, field)
    limits.check_pixels(path, header["shape"], header["samples_per_pixel"])
    limits.check_geometry(path, header["shape"], spacing)
    _native_pixel_bytes(path, ds, header)

    ts_name = header["transfer_syntax"]
    try:
        arr = ds.pixel_array
    except Exception as e:
        raise RadiographReadError(
            path,
            f"cannot decode the pixel data ({ts_name}; truncated or corrupt file?): "
            f"{type(e).__name__}: {_first_line(e)}",
        ) from e
    rows, cols = header["shape"]
    arr = np.asarray(arr)
    if arr.shape != (rows, cols):
        raise RadiographReadError(
            path, f"decoded pixel data has shape {arr.shape}, the header says ({rows}, {cols})"
        )
    signed = header["pixel_representation"] == 1
    is_float = arr.dtype.kind == "f"
    if not is_float:
        arr = _mask_to_bits_stored(arr, header["bits_stored"], signed)
    values = _modality_transform(ds, arr) if not is_float else arr.astype(np.float64)

    if header["photometric_interpretation"] == "MONOCHROME1":
        # MONOCHROME1: the minimum is displayed white, after the modality transform
        # (PS3.3 C.7.6.3.1.2). Invert over the valid output range: out = lo + hi - value,
        # where [lo, hi] is the stored range [0, 2**BitsStored - 1] (signed: ±2**(BitsStored-1))
        # passed through the modality transform. With slope 1 and intercept 0 this is
        # (2**BitsStored - 1) - stored.
        if is_float:
            lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        else:
            ends = _modality_transform(ds, np.array(_stored_range(header["bits_stored"], signed)))
            lo, hi = float(np.min(ends)), float(np.max(ends))
        values = (lo + hi) - values

    meta = {
        "photometric_interpretation": header["photometric_interpretation"],
        "transfer_syntax": ts_name,
        "patient_id": header["patient_id"],
        "laterality": header["laterality"],
        "view_position": header["view_position"],
        "patient_orientation": header["patient_orientation"],
        "series_description": header["series_description"],
        "modality": header["modality"],
        "format": "DICOM",
        "stored_as": "",  # DICOM colour photometrics are refused above
    }
    return _finish(path, values, spacing, source, meta)


# --------------------------------------------------------------------------------------
# Other formats, through SimpleITK


def _header_text(path: Path, limit: int = 65536) -> str:
    with open(path, "rb") as f:
        head = f.read(limit)
    return head.decode("latin-1", errors="replace")


def _header_fields(path: Path) -> dict[str, str]:
    """The ``key: value`` lines of an NRRD header (up to its blank line) or the ``key = value`` lines of a
    MetaImage header (up to ElementDataFile), keys in lower case."""
    text = _header_text(path)
    nrrd = text.startswith("NRRD")
    fields: dict[str, str] = {}
    for line in re.split(r"\r?\n", text)[1 if nrrd else 0:]:
        if nrrd and not line.strip():
            break  # end of the NRRD header
        key, sep, value = line.partition(":" if nrrd else "=")
        key = key.strip().lower()
        if sep:
            fields.setdefault(key, value.strip())
        if not nrrd and key == "elementdatafile":
            break
    return fields


def _nrrd_sets_spacing(path: Path) -> bool:
    return bool({"spacings", "space directions"} & set(_header_fields(path)))


def _metaimage_sets_spacing(path: Path) -> bool:
    return bool({"elementspacing", "elementsize"} & set(_header_fields(path)))


def _itk_info(path: Path):
    import SimpleITK as sitk

    try:
        io_name = sitk.ImageFileReader.GetImageIOFromFileName(str(path))
    except RuntimeError:
        io_name = ""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    if io_name:
        reader.SetImageIO(io_name)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        if io_name:
            problem = f"cannot read the {_IO_FORMATS.get(io_name, io_name)} file ({_first_line(e)})"
        else:
            problem = (
                "not a recognised image file (not DICOM, and SimpleITK has no reader for it: "
                f"{_first_line(e)})"
            )
        raise RadiographReadError(path, problem) from e
    return reader, io_name


#: DICOM header fields a NRRD/MetaImage may carry by their DICOM keyword (what the Slicer module writes)
_CARRIED_TAGS = ("ImageLaterality", "ViewPosition", "PatientOrientation")


def _itk_header(path: Path) -> tuple[dict[str, Any], Any]:
    import SimpleITK as sitk

    reader, io_name = _itk_info(path)
    if io_name == "GDCMImageIO":
        raise RadiographReadError(
            path, "ITK/GDCM reads this as DICOM but pydicom cannot parse it (corrupt DICOM?)"
        )
    size = tuple(int(s) for s in reader.GetSize())  # ITK order: x (columns), y (rows), z ...
    itk_spacing = tuple(float(s) for s in reader.GetSpacing())
    components = int(reader.GetNumberOfComponents())
    fmt = _IO_FORMATS.get(io_name, io_name or "unknown")

    # array axes are ITK axes reversed; keep the non-singleton ones
    array_shape = size[::-1]
    array_spacing = itk_spacing[::-1]
    kept = [i for i, n in enumerate(array_shape) if n > 1]
    problems: list[str] = []
    if components not in (1, 3, 4):  # RGB/RGBA may be grey stored as colour: checked on the pixels
        problems.append(
            f"not a grey-level image ({components} channels per pixel); "
            "only grey images (or grey stored as RGB/RGBA) are radiographs this reader accepts"
        )
    if any(n == 0 for n in array_shape):
        problems.append(f"zero-size image (size {size})")
    elif len(kept) > 2:
        problems.append(f"{len(kept)}-D image (size {size}); a single 2-D radiograph is expected")
    elif len(kept) < 2:
        problems.append(f"not a 2-D image (size {size})")
    shape = (
        (array_shape[kept[0]], array_shape[kept[1]]) if len(kept) == 2 else tuple(array_shape[-2:])
    )
    spacing, bad_spacing = None, ""
    if io_name in _HEADER_SPACING_IOS and len(kept) == 2:
        sets = {
            "NrrdImageIO": _nrrd_sets_spacing,
            "MetaImageIO": _metaimage_sets_spacing,
        }.get(io_name, lambda p: True)(path)
        if sets:
            row_col = (array_spacing[kept[0]], array_spacing[kept[1]])
            if io_name == "NiftiImageIO":  # NIfTI stores float32: keep its shortest decimal
                row_col = tuple(float(str(np.float32(v))) for v in row_col)
            try:
                spacing = _as_spacing(row_col)
            except ValueError:
                spacing = None
                bad_spacing = f"the {fmt} header's pixel spacing {row_col[0]:g} × {row_col[1]:g} is not positive"
    # a NRRD (or MetaImage) may carry the DICOM header's laterality and view as fields named after the DICOM
    # keywords (the Slicer module writes them from the volume's source file)
    fields = {k: reader.GetMetaData(k).strip() for k in reader.GetMetaDataKeys() if k in _CARRIED_TAGS}
    header = {
        "path": str(path),
        "format": fmt,
        "shape": shape,
        "number_of_frames": 1
        if len(kept) <= 2
        else int(np.prod([array_shape[i] for i in kept[:-2]])),
        "samples_per_pixel": components,
        "pixel_spacing_mm": spacing,
        "spacing_source": "header" if spacing is not None else None,
        "spacing_notes": [
            bad_spacing or f"the {fmt} header sets no pixel spacing"
            if io_name in _HEADER_SPACING_IOS
            else f"{fmt} files carry no trustworthy pixel spacing"
        ]
        if spacing is None
        else [],
        "photometric_interpretation": None,
        "transfer_syntax": None,
        "transfer_syntax_uid": None,
        "decoder": f"SimpleITK {io_name}" if io_name else "SimpleITK",
        "pixel_type": sitk.GetPixelIDValueAsString(reader.GetPixelID()),
        "modality": None,
        "patient_id": None,
        "laterality": fields.get("ImageLaterality") or None,
        "view_position": (fields.get("ViewPosition") or "").upper() or None,
        "patient_orientation": (fields.get("PatientOrientation") or "").upper() or None,
        "series_description": None,
        "problems": problems,
        "_kept_axes": kept,
    }
    return header, reader


#: channels of a grey image stored as colour differ by compression noise only: the 99th percentile
#: of the channel differences stays within this fraction of the image's range (JPEG at quality ≥ 75
#: keeps it under 1 %; a colour photograph or a coloured annotation overlay is far above)
GREY_CHANNEL_TOLERANCE = 0.03


def grey_from_colour(arr: np.ndarray, path: Path, tolerance: float = GREY_CHANNEL_TOLERANCE
                     ) -> tuple[np.ndarray, str]:
    """``(H, W, 3|4)`` pixels of a grey image stored as RGB(A) → ``(H, W)`` grey (the channel mean)
    and a note for the metadata; a truly coloured image (or one with transparency) is refused."""
    colour = arr[..., :3].astype(np.float64)
    if arr.shape[-1] == 4:
        alpha = arr[..., 3]
        if alpha.min() != alpha.max():
            raise RadiographReadError(path, "RGBA image with transparent pixels; a radiograph is expected")
    span = float(colour.max() - colour.min()) or 1.0
    step = max(1, int(np.sqrt(colour[..., 0].size / 250_000)))  # a regular subsample is enough
    sample = colour[::step, ::step]
    diff = np.abs(sample - sample.mean(axis=-1, keepdims=True)).max(axis=-1)
    p99 = float(np.percentile(diff, 99)) / span
    kind = "RGBA" if arr.shape[-1] == 4 else "RGB"
    if p99 > tolerance:
        raise RadiographReadError(
            path, f"a colour image ({kind} channels differ: 99th percentile {100 * p99:.1f} % of the range, "
                  f"grey allows {100 * tolerance:.0f} %); a grey-level radiograph is expected")
    return colour.mean(axis=-1), f"grey stored as {kind} (channels differ ≤ {100 * p99:.1f} % of the range)"


def _complete_file(path: Path, fmt: str) -> None:
    """JPEG and PNG files end with a marker; one cut short decodes to a partly grey image with only a
    library warning, so it is refused here."""
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 64))
        tail = fh.read().rstrip(b"\0")
    if fmt == "JPEG" and not tail.endswith(b"\xff\xd9"):
        raise RadiographReadError(path, "truncated JPEG (the file ends before its end-of-image marker)")
    if fmt == "PNG" and b"IEND" not in tail[-12:]:
        raise RadiographReadError(path, "truncated PNG (the file ends before its IEND chunk)")


def _regular_data_files(path: Path) -> None:
    """A MetaImage/NRRD header names its data file; a pipe or device there would block the reader
    forever, so only regular files are read."""
    key = {".mhd": "elementdatafile", ".nhdr": "data file"}.get(path.suffix.lower())
    name = _header_fields(path).get(key, "") if key else ""
    if name and name.upper() not in ("LOCAL", "LIST"):
        data = (path.parent / name).resolve()
        if not data.exists():
            raise RadiographReadError(path, f"its data file {name} does not exist")
        if not data.is_file():
            raise RadiographReadError(path, f"its data file {name} is not a regular file (a pipe, socket or device?); "
                                            "not read")


def _read_itk(path: Path, spacing_mm: tuple[float, float] | None, limits: ReadLimits | None = None,
              field: FieldSize | None = None) -> AffineImage:
    import SimpleITK as sitk

    _regular_data_files(path)
    header, reader = _itk_header(path)
    if header["problems"]:
        raise RadiographReadError(path, header["problems"][0])
    limits = limits or ReadLimits()
    limits.check_pixels(path, header["shape"], header["samples_per_pixel"])
    _complete_file(path, header["format"])

    def pixels() -> np.ndarray:
        try:
            return sitk.GetArrayFromImage(reader.Execute())
        except RuntimeError as e:
            raise RadiographReadError(path, f"cannot read the image data ({_first_line(e)})") from e

    kept = header["_kept_axes"]
    arr, stored_as = None, ""
    if header["samples_per_pixel"] > 1:  # a colour image is refused as such, before any spacing question
        arr = pixels()
        arr, stored_as = grey_from_colour(arr.reshape(arr.shape[kept[0]], arr.shape[kept[1]], arr.shape[-1]), path)
    spacing, source = _spacing_to_use(path, header, spacing_mm, field)
    limits.check_geometry(path, header["shape"], spacing)
    if arr is None:
        arr = pixels()
    arr = arr.reshape(arr.shape[kept[0]], arr.shape[kept[1]]) if arr.ndim != 2 else arr
    if arr.dtype.kind not in "uif":
        raise RadiographReadError(path, f"unsupported pixel type {header['pixel_type']}")
    meta = {
        "stored_as": stored_as,
        "photometric_interpretation": None,
        "transfer_syntax": None,
        "patient_id": None,
        "laterality": header["laterality"],
        "view_position": header["view_position"],
        "patient_orientation": header["patient_orientation"],
        "series_description": None,
        "modality": None,
        "format": header["format"],
    }
    return _finish(path, arr.astype(np.float64), spacing, source, meta)


# --------------------------------------------------------------------------------------
# The result


def _finish(
    path: Path, values: np.ndarray, spacing: tuple[float, float], source: str, extra: dict
) -> AffineImage:
    if values.size == 0:
        raise RadiographReadError(path, f"zero-size image (shape {values.shape})")
    if not np.all(np.isfinite(values)):
        raise RadiographReadError(path, "the image contains NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        raise RadiographReadError(path, f"constant image (every pixel is {lo:g})")
    h, w = values.shape
    affine = _spacing_affine(spacing)
    meta = {
        "filename_or_obj": str(path),
        "pixel_spacing_mm": (float(spacing[0]), float(spacing[1])),
        "spacing_source": source,
        "original_shape": (int(h), int(w)),
        # an absent tag is "" (not None): torch's default_collate cannot batch None
        **{key: "" if value is None else value for key, value in extra.items()},
        # MONAI's own keys: already channel-first, so EnsureChannelFirst(d) is a no-op
        "original_channel_dim": 0,
        "spatial_shape": np.array([h, w]),
        "original_affine": affine.clone(),
    }
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)[None])
    return AffineImage(tensor, affine, meta)


def read_radiograph(path: str | os.PathLike, spacing_mm: SpacingLike = None, limits: ReadLimits | None = None):
    """Read one radiograph into a ``(1, H, W)`` float32 ``MetaTensor`` with its spacing.

    Args:
        path: a DICOM file (recognised by content) or any single-image file SimpleITK reads
            (PNG, TIFF, JPEG, NRRD, NIfTI, MHA/MHD, ...).
        spacing_mm: pixel spacing in mm, one number or ``(row, col)``. When given it
            *overrides* the file's spacing (``spacing_source`` = ``"user"``); it is required
            for files without one (PNG, JPEG, TIFF, DICOM without a valid
            ImagerPixelSpacing/PixelSpacing).

    Spacing precedence without ``spacing_mm``: DICOM ImagerPixelSpacing, else PixelSpacing
    (a tag whose value is not two positive numbers is skipped with a warning); NRRD, NIfTI and
    MetaImage header spacing (``"header"``). Intensities: stored values → BitsStored mask →
    RescaleSlope/RescaleIntercept (or Modality LUT) → MONOCHROME1 inverted over the valid range,
    so that higher is always brighter.

    ``limits`` (:class:`ReadLimits`, default ones): files larger than a knee radiograph, spacings
    outside a radiograph's and fields larger than any film are refused before decoding.

    Raises:
        RadiographReadError: the message starts with the path and names the problem.
        ValueError: ``spacing_mm`` is not a positive number or pair.
    """
    return read_image(path, spacing_mm, limits).to_metatensor()


def read_image(path: str | os.PathLike, spacing_mm: SpacingLike = None, limits: ReadLimits | None = None,
               field: FieldSize | None = None) -> AffineImage:
    """:func:`read_radiograph` without MONAI: the same pixels, affine and metadata as an
    :class:`~kneel_monai.image.AffineImage` (what ``kneel predict`` reads with; see :mod:`kneel_monai.image`).
    ``field``: for a file without a spacing (of its own or ``spacing_mm``), the imaged field's size gives it
    one (:class:`FieldSize`; ``spacing_source`` ``field_width``/``field_height``)."""
    spacing = _as_spacing(spacing_mm)
    path = Path(os.fspath(path))
    _check_file(path)
    is_dicom, has_preamble = _sniff_dicom(path)
    if is_dicom:
        return _read_dicom(path, force=not has_preamble, spacing_mm=spacing, limits=limits, field=field)
    return _read_itk(path, spacing, limits, field)


def describe_radiograph(path: str | os.PathLike) -> dict[str, Any]:
    """What :func:`read_radiograph` would see, read from the header without decoding pixels.

    Returns a dict with ``path``, ``format`` ("DICOM", "PNG", "NRRD", ...), ``file_size_bytes``,
    ``shape`` ``(rows, cols)``, ``number_of_frames``, ``samples_per_pixel``,
    ``pixel_spacing_mm`` and ``spacing_source`` (what would be used without ``spacing_mm``;
    ``None`` when the file has none), ``photometric_interpretation``, ``transfer_syntax``
    (+ ``transfer_syntax_uid``), ``decoder`` (the pydicom handler or SimpleITK ImageIO that
    would decode it), ``modality``, ``patient_id``, ``laterality``, ``series_description``;
    for DICOM also ``bits_allocated``, ``bits_stored``, ``pixel_representation``, ``rescale``,
    ``imager_pixel_spacing_mm`` and ``pixel_spacing_tag_mm`` (each tag's own value); and
    ``problems``: the reasons ``read_radiograph`` would refuse the file that show in the header
    (a missing spacing included). Damage inside the pixel data shows only on reading.

    Raises:
        RadiographReadError: missing, empty or unreadable file, not an image.
    """
    path = Path(os.fspath(path))
    _check_file(path)
    is_dicom, has_preamble = _sniff_dicom(path)
    if is_dicom:
        # defer_size: large values (the pixel data) stay on disk, but their tags are listed
        ds = _read_dicom_dataset(path, force=not has_preamble, defer_size=1024)
        info = _dicom_header(path, ds)
    else:
        info, _ = _itk_header(path)
        info.pop("_kept_axes", None)
    if info["pixel_spacing_mm"] is None:
        detail = (
            "; ".join(info.get("spacing_notes") or []) or "ImagerPixelSpacing/PixelSpacing absent"
        )
        info["problems"].append(f"no pixel spacing ({detail}); pass spacing_mm")
    info.pop("spacing_notes", None)
    info["file_size_bytes"] = path.stat().st_size
    return info
