"""Write a grey-level radiograph as a DX or CR DICOM file (for tests and synthetic data).

``write_dicom`` takes *display* intensities (higher = brighter) and writes them so that
:func:`kneel_monai.io.read_radiograph` gives the same image back, whatever the photometric
interpretation or transfer syntax:

=============================  ===========================  ==================================
``transfer_syntax``            DICOM transfer syntax        encoder
=============================  ===========================  ==================================
explicit_vr_little_endian      1.2.840.10008.1.2.1          (native)
implicit_vr_little_endian      1.2.840.10008.1.2            (native)
rle_lossless                   1.2.840.10008.1.2.5          pydicom (pylibjpeg-rle when there)
jpeg2000_lossless              1.2.840.10008.1.2.4.90       pylibjpeg-openjpeg
jpeg_lossless                  1.2.840.10008.1.2.4.70       python-gdcm
jpeg_ls_lossless               1.2.840.10008.1.2.4.80       python-gdcm
=============================  ===========================  ==================================

A syntax whose encoder package is not installed raises ``NotImplementedError`` naming it.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write

__all__ = ["TRANSFER_SYNTAXES", "SOP_CLASSES", "write_dicom", "dicom_uid"]

#: writer name → transfer syntax UID
TRANSFER_SYNTAXES = {
    "explicit_vr_little_endian": "1.2.840.10008.1.2.1",
    "implicit_vr_little_endian": "1.2.840.10008.1.2",
    "rle_lossless": "1.2.840.10008.1.2.5",
    "jpeg2000_lossless": "1.2.840.10008.1.2.4.90",
    "jpeg_lossless": "1.2.840.10008.1.2.4.70",
    "jpeg_ls_lossless": "1.2.840.10008.1.2.4.80",
}

#: modality → storage SOP class UID
SOP_CLASSES = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
}

_SPACING_TAGS = ("ImagerPixelSpacing", "PixelSpacing", "both", None)
_LATERALITIES = ("R", "L", "B", "U")
_J2K_MIN_SIDE = 32  # 2 ** (6 resolutions - 1)
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "kneel-monai.io.dicom_writer")


def dicom_uid(seed: str | None, role: str) -> str:
    """A ``2.25.<uuid>`` UID: derived from ``seed`` and ``role`` (reproducible) or random."""
    if seed is None:
        return f"2.25.{uuid.uuid4().int}"
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, f'{seed}|{role}').int}"


def _ds(value: float) -> str:
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _validate_pixels(pixels: Any, bits_stored: int) -> np.ndarray:
    arr = np.asarray(pixels)
    if arr.ndim != 2:
        raise ValueError(f"pixels must be a 2-D (H, W) array, got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"pixels must not be empty, got shape {arr.shape}")
    if arr.dtype.kind not in "ui":
        raise TypeError(f"pixels must be an integer array, got dtype {arr.dtype}")
    top = 2**bits_stored - 1
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > top:
        raise ValueError(
            f"pixels must lie in [0, {top}] for bits_stored={bits_stored}, got [{lo}, {hi}]"
        )
    return arr


def _encode_with_gdcm(ds, ts_uid: str, folder: Path) -> bytes:
    """Transcode the native data set with GDCM; return its encapsulated Pixel Data bytes."""
    try:
        import gdcm
    except ImportError as e:
        raise NotImplementedError(
            f"encoding {ts_uid} needs python-gdcm (pip install python-gdcm)"
        ) from e
    import pydicom

    gdcm_syntax = {
        "1.2.840.10008.1.2.4.70": gdcm.TransferSyntax.JPEGLosslessProcess14_1,
        "1.2.840.10008.1.2.4.80": gdcm.TransferSyntax.JPEGLSLossless,
    }[ts_uid]
    fd_in, src = tempfile.mkstemp(dir=folder, prefix=".gdcm-in-", suffix=".dcm")
    os.close(fd_in)
    fd_out, dst = tempfile.mkstemp(dir=folder, prefix=".gdcm-out-", suffix=".dcm")
    os.close(fd_out)
    try:
        pydicom.dcmwrite(src, ds, write_like_original=False)
        reader = gdcm.ImageReader()
        reader.SetFileName(src)
        if not reader.Read():
            raise RuntimeError("GDCM could not read the intermediate file")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm_syntax))
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError(f"GDCM could not encode {ts_uid}")
        writer = gdcm.ImageWriter()
        writer.SetFileName(dst)
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise RuntimeError("GDCM could not write the encoded file")
        encoded = pydicom.dcmread(dst)
        if str(encoded.file_meta.TransferSyntaxUID) != ts_uid:
            raise RuntimeError(f"GDCM wrote {encoded.file_meta.TransferSyntaxUID}, not {ts_uid}")
        return encoded.PixelData
    finally:
        for name in (src, dst):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass


def _encode_jpeg2000(stored: np.ndarray, bits_stored: int) -> bytes:
    try:
        import openjpeg
    except ImportError as e:
        raise NotImplementedError(
            "encoding jpeg2000_lossless needs pylibjpeg-openjpeg (pip install pylibjpeg-openjpeg)"
        ) from e
    from pydicom.encaps import encapsulate

    if min(stored.shape) < _J2K_MIN_SIDE:
        raise ValueError(
            f"jpeg2000_lossless needs at least {_J2K_MIN_SIDE} pixels a side (pylibjpeg-openjpeg "
            f"encodes 6 wavelet resolutions), got shape {stored.shape}"
        )

    # a raw J2K codestream (codec_format 0), reversible 5-3 wavelet, no colour transform
    frame = openjpeg.encode(
        np.ascontiguousarray(stored),
        bits_stored=bits_stored,
        photometric_interpretation=2,  # greyscale
        use_mct=False,
        codec_format=0,
    )
    return encapsulate([bytes(frame)])


def _set_encapsulated(ds, data: bytes) -> None:
    ds.add_new(0x7FE00010, "OB", data)
    ds["PixelData"].is_undefined_length = True


def write_dicom(
    path: str | os.PathLike,
    pixels: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    *,
    spacing_tag: str | None = "ImagerPixelSpacing",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    modality: str = "DX",
    transfer_syntax: str = "explicit_vr_little_endian",
    patient_id: str = "SYNTHETIC",
    laterality: str | None = None,
    series_description: str = "",
    study_uid: str | None = None,
    rescale: tuple[float, float] | None = None,
    extra_tags: dict | None = None,
    uid_seed: str | None = None,
) -> Path:
    """Write ``pixels`` as a single-frame DX (or CR) DICOM file, atomically.

    Args:
        path: output file (its folder is created; the file is replaced atomically).
        pixels: ``(H, W)`` unsigned integers within ``bits_stored``, display intensities
            (higher = brighter). For ``MONOCHROME1`` the file stores
            ``(2**bits_stored - 1) - pixels``, so that reading gives ``pixels`` back.
        pixel_spacing_mm: ``(row, col)`` spacing in mm.
        spacing_tag: "ImagerPixelSpacing", "PixelSpacing", "both" (same value in both; use
            ``extra_tags`` to make them differ) or ``None`` (no spacing in the file).
        photometric: "MONOCHROME2" or "MONOCHROME1".
        bits_stored: 1..16; BitsAllocated is 8 up to 8 bits, else 16.
        modality: "DX" (Digital X-Ray Image Storage - For Presentation) or "CR" (Computed
            Radiography Image Storage).
        transfer_syntax: one of :data:`TRANSFER_SYNTAXES`.
        patient_id, series_description: written as given (PatientName = patient_id).
        laterality: "R", "L", "B" (both), "U" (unpaired) or ``None`` (not written):
            ImageLaterality for DX, Laterality for CR.
        study_uid: StudyInstanceUID to use (to put several files in one study).
        rescale: ``(slope, intercept)`` written as RescaleSlope/RescaleIntercept (reading
            gives ``slope * pixels + intercept``); default ``(1, 0)``.
        extra_tags: ``{keyword: value}`` set last and verbatim (file-meta keywords go to the
            file meta); ``None`` deletes the element. It can make the file inconsistent, on
            purpose, for tests.
        uid_seed: makes the UIDs (and so the whole file) reproducible: Study/Series/SOP
            Instance UIDs are ``2.25.`` UUID-5 UIDs of the seed, and the dates are left empty.
            Without it the UIDs are random and the dates are today's.

    Returns:
        The path written.

    Raises:
        NotImplementedError: the encoder for ``transfer_syntax`` is not installed.
        ValueError / TypeError: invalid arguments.
    """
    import pydicom
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, RLELossless

    # ---- arguments
    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise ValueError(
            f"transfer_syntax must be one of {sorted(TRANSFER_SYNTAXES)}, got {transfer_syntax!r}"
        )
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    if modality not in SOP_CLASSES:
        raise ValueError(f"modality must be one of {sorted(SOP_CLASSES)}, got {modality!r}")
    if spacing_tag not in _SPACING_TAGS:
        raise ValueError(f"spacing_tag must be one of {_SPACING_TAGS}, got {spacing_tag!r}")
    if laterality is not None and laterality not in _LATERALITIES:
        raise ValueError(f"laterality must be one of {_LATERALITIES} or None, got {laterality!r}")
    if not isinstance(bits_stored, (int, np.integer)) or not 1 <= int(bits_stored) <= 16:
        raise ValueError(f"bits_stored must be an integer in 1..16, got {bits_stored!r}")
    bits_stored = int(bits_stored)
    spacing = tuple(float(v) for v in np.asarray(pixel_spacing_mm, dtype=np.float64).reshape(-1))
    if len(spacing) != 2 or not all(math.isfinite(v) and v > 0 for v in spacing):
        raise ValueError(
            f"pixel_spacing_mm must be two positive numbers (row, col), got {pixel_spacing_mm!r}"
        )
    slope, intercept = (1.0, 0.0) if rescale is None else (float(rescale[0]), float(rescale[1]))
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
        raise ValueError(f"rescale must be a finite (slope != 0, intercept) pair, got {rescale!r}")
    arr = _validate_pixels(pixels, bits_stored)

    bits_allocated = 8 if bits_stored <= 8 else 16
    top = 2**bits_stored - 1
    stored = arr.astype(np.int64)
    if photometric == "MONOCHROME1":
        stored = top - stored
    stored = stored.astype("<u1" if bits_allocated == 8 else "<u2")
    rows, cols = stored.shape
    ts_uid = UID(TRANSFER_SYNTAXES[transfer_syntax])

    path = Path(os.fspath(path))
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)

    # ---- the data set
    sop_class = SOP_CLASSES[modality]
    sop_instance = dicom_uid(uid_seed, "sop-instance")
    if uid_seed is None:
        now = _dt.datetime.now()
        date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    else:
        date = time = ""

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ts_uid

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.StudyDate = date
    ds.StudyTime = time
    ds.ContentDate = date
    ds.ContentTime = time
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = "kneel-monai"
    ds.ReferringPhysicianName = ""
    if series_description:
        ds.SeriesDescription = series_description
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.BodyPartExamined = "KNEE"
    ds.ViewPosition = "PA"
    ds.StudyInstanceUID = study_uid if study_uid is not None else dicom_uid(uid_seed, "study")
    ds.SeriesInstanceUID = dicom_uid(uid_seed, "series")
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    # a bilateral PA view: columns run to the patient's left, rows to the feet
    ds.PatientOrientation = ["L", "F"]
    if laterality is not None:
        if modality == "DX":
            ds.ImageLaterality = laterality
        else:
            ds.Laterality = laterality
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.DetectorType = ""
        ds.BurnedInAnnotation = "NO"
        ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    ds.LossyImageCompression = "00"
    if spacing_tag in ("ImagerPixelSpacing", "both"):
        ds.ImagerPixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]
    if spacing_tag in ("PixelSpacing", "both"):
        ds.PixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = _ds(intercept)
    ds.RescaleSlope = _ds(slope)
    ds.RescaleType = "US"
    # a window over the image's own range, in output (rescaled) units
    out_lo, out_hi = sorted(
        (slope * float(stored.min()) + intercept, slope * float(stored.max()) + intercept)
    )
    ds.WindowCenter = _ds((out_lo + out_hi) / 2)
    ds.WindowWidth = _ds(max(out_hi - out_lo, 1.0))

    ds.is_little_endian = True
    ds.is_implicit_VR = transfer_syntax == "implicit_vr_little_endian"
    native_syntax = "1.2.840.10008.1.2" if ds.is_implicit_VR else "1.2.840.10008.1.2.1"
    ds.file_meta.TransferSyntaxUID = UID(native_syntax)
    ds.add_new(0x7FE00010, "OB" if bits_allocated == 8 else "OW", stored.tobytes())

    # ---- compression
    if transfer_syntax == "rle_lossless":
        from pydicom.encoders import RLELosslessEncoder

        # the fast pylibjpeg-rle plugin when installed, else pydicom's own (pure Python)
        missing = {m.split(" ", 1)[0] for m in RLELosslessEncoder.missing_dependencies}
        plugin = "pylibjpeg" if "pylibjpeg" not in missing else "pydicom"
        ds.compress(RLELossless, arr=stored, encoding_plugin=plugin)
    elif transfer_syntax == "jpeg2000_lossless":
        _set_encapsulated(ds, _encode_jpeg2000(stored, bits_stored))
    elif transfer_syntax in ("jpeg_lossless", "jpeg_ls_lossless"):
        _set_encapsulated(ds, _encode_with_gdcm(ds, str(ts_uid), folder))
    ds.file_meta.TransferSyntaxUID = ts_uid

    # ---- caller's overrides, last and verbatim
    for keyword, value in (extra_tags or {}).items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"extra_tags: unknown DICOM keyword {keyword!r}")
        target = ds.file_meta if (tag >> 16) == 0x0002 else ds
        if value is None:
            if keyword in target:
                del target[keyword]
        elif keyword == "PixelData":
            target.add_new(tag, "OB" if bits_allocated == 8 else "OW", value)
        else:
            target.add_new(tag, dictionary_VR(tag).split(" ")[0], value)
    written_ts = ds.file_meta.get("TransferSyntaxUID")
    if written_ts is not None:  # (an override may name a syntax pydicom doesn't know)
        ds.is_implicit_VR = str(written_ts) == "1.2.840.10008.1.2"

    return atomic_write(path, lambda tmp: pydicom.dcmwrite(str(tmp), ds, write_like_original=False))
