"""Reading radiographs (DICOM in every syntax, PNG/TIFF/NRRD/MHA/NIfTI) and writing DICOM.

Real files only: pydicom's and pydicom-data's test images (real CR radiographs among them)
and files written here with ``write_dicom`` and SimpleITK. Nothing is downloaded: the
pydicom-data files are found through its installed entry point.
"""

from __future__ import annotations

import os
import pickle
import shutil
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, Spacingd
from pydicom.pixel_data_handlers import numpy_handler, pylibjpeg_handler, rle_handler

from kneel_monai.io import (
    SOP_CLASSES,
    TRANSFER_SYNTAXES,
    LoadRadiograph,
    LoadRadiographd,
    RadiographReadError,
    describe_radiograph,
    read_radiograph,
    write_dicom,
)

COMPRESSED = ["rle_lossless", "jpeg2000_lossless", "jpeg_lossless", "jpeg_ls_lossless"]
_GDCM_SYNTAXES = ("jpeg_lossless", "jpeg_ls_lossless")


def _missing(message: str):
    """Skip locally, fail under CI: a missing test dependency must not pass silently there."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _need_gdcm(syntax: str) -> None:
    if syntax in _GDCM_SYNTAXES:
        try:
            import gdcm  # noqa: F401
        except ImportError:
            _missing(f"python-gdcm is needed to encode {syntax}")


def pydicom_data_file(name: str) -> Path:
    """A file of the installed pydicom-data package (its entry point; never a download)."""
    for ep in entry_points(group="pydicom.data.external_sources"):
        if ep.name == "pydicom-data":
            try:
                return Path(ep.load()().get_path(name))
            except ValueError:
                break
    _missing(f"pydicom-data with {name} is not installed")


def bundled_file(name: str) -> Path:
    """A test file shipped inside pydicom itself."""
    path = pydicom.data.get_testdata_file(name, download=False)
    assert path is not None, name
    return Path(path)


def assert_names(exc_info, path) -> None:
    assert str(exc_info.value).startswith(f"{path}: "), str(exc_info.value)
    assert exc_info.value.path == str(path)


@pytest.fixture(scope="module")
def pixels12() -> np.ndarray:
    """A 12-bit display image: a smooth 'knee-like' gradient with noise (not constant)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:48, 0:64]
    img = 1800 + 900 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + rng.normal(0, 60, xx.shape)
    img[0, 0], img[-1, -1] = 0, 4095  # the full range, to catch inversion/overflow errors
    return np.clip(img, 0, 4095).astype(np.uint16)


@pytest.fixture(scope="module")
def written(tmp_path_factory, pixels12) -> dict:
    """The same image written in every syntax, MONOCHROME2 and MONOCHROME1."""
    folder = tmp_path_factory.mktemp("syntaxes")
    out = {}
    for syntax in TRANSFER_SYNTAXES:
        if syntax in _GDCM_SYNTAXES:
            try:
                import gdcm  # noqa: F401
            except ImportError:
                continue
        for pi in ("MONOCHROME2", "MONOCHROME1"):
            out[syntax, pi] = write_dicom(
                folder / f"{syntax}_{pi}.dcm",
                pixels12,
                (0.15, 0.2),
                transfer_syntax=syntax,
                photometric=pi,
                uid_seed=f"{syntax}-{pi}",
            )
    return out


# ---------------------------------------------------------------------------------------------
# real radiographs (pydicom-data: CR, MONOCHROME1, 15 and 10 bits stored)


@pytest.mark.parametrize("stem", ["RG1", "RG3"])
def test_real_cr_jpeg2000_decodes_like_uncompressed(stem):
    # R = reversible (lossless) JPEG 2000 vs its original; I = irreversible JPEG 2000 vs the
    # uncompressed copy of what it decodes to: both pairs must be pixel-identical
    for kind in ("R", "I"):
        plain = read_radiograph(pydicom_data_file(f"{stem}_UNC{kind}.dcm"), spacing_mm=0.14)
        j2k = read_radiograph(pydicom_data_file(f"{stem}_J2K{kind}.dcm"), spacing_mm=0.14)
        assert j2k.meta["transfer_syntax"].startswith("JPEG 2000")
        assert plain.meta["transfer_syntax"] == "Explicit VR Little Endian"
        assert torch.equal(plain, j2k)
    assert (
        plain.meta["modality"] == "CR" and plain.meta["photometric_interpretation"] == "MONOCHROME1"
    )


def test_real_cr_monochrome1_is_inverted_over_bits_stored():
    path = pydicom_data_file("RG3_UNCR.dcm")
    img = read_radiograph(path, spacing_mm=(0.2, 0.2))
    raw = pydicom.dcmread(path).pixel_array  # BitsStored 10, MONOCHROME1
    assert (
        isinstance(img, MetaTensor) and img.shape == (1, 1760, 1760) and img.dtype == torch.float32
    )
    np.testing.assert_array_equal(img[0].numpy(), (1023 - raw).astype(np.float32))
    assert img.meta["laterality"] == "R"  # from (0020,0060) Laterality
    assert img.meta["patient_id"] == "11RG3"
    assert img.meta["original_shape"] == (1760, 1760)


def test_real_files_without_usable_spacing_need_spacing_mm():
    # RG3 has no spacing tag; RG1's PixelSpacing is "0.000\0.000": invalid, so refused too
    rg3 = pydicom_data_file("RG3_UNCR.dcm")
    with pytest.raises(
        RadiographReadError, match=r"ImagerPixelSpacing/PixelSpacing absent\); pass spacing_mm"
    ) as e:
        read_radiograph(rg3)
    assert_names(e, rg3)
    rg1 = pydicom_data_file("RG1_UNCR.dcm")
    with pytest.raises(
        RadiographReadError, match=r"PixelSpacing '0.000\\0.000' is not two positive numbers"
    ) as e:
        read_radiograph(rg1)
    assert_names(e, rg1)
    assert describe_radiograph(rg1)["pixel_spacing_mm"] is None
    img = read_radiograph(rg1, spacing_mm=0.143)
    assert img.meta["spacing_source"] == "user" and img.meta["pixel_spacing_mm"] == (0.143, 0.143)


def test_pydicom_jpeg_ls_rle_and_j2k_samples_match_uncompressed():
    ref = read_radiograph(bundled_file("MR_small.dcm"))
    assert ref.meta["spacing_source"] == "PixelSpacing"
    for name in ("MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"):
        assert torch.equal(read_radiograph(bundled_file(name)), ref), name


def test_signed_data_with_rescale_matches_pydicom_modality_lut():
    from pydicom.pixel_data_handlers.util import apply_modality_lut

    path = bundled_file("CT_small.dcm")  # signed 16 bit, RescaleIntercept
    ds = pydicom.dcmread(path)
    expected = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    np.testing.assert_array_equal(read_radiograph(path)[0].numpy(), expected)


# ---------------------------------------------------------------------------------------------
# written files: every syntax, both photometric interpretations


@pytest.mark.parametrize("syntax", list(TRANSFER_SYNTAXES))
@pytest.mark.parametrize("pi", ["MONOCHROME2", "MONOCHROME1"])
def test_every_syntax_reads_back_the_written_display_image(written, pixels12, syntax, pi):
    _need_gdcm(syntax)
    path = written[syntax, pi]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[syntax]
    img = read_radiograph(path)
    np.testing.assert_array_equal(img[0].numpy(), pixels12.astype(np.float32))
    assert img.meta["photometric_interpretation"] == pi
    assert img.meta["transfer_syntax"] == pydicom.uid.UID(TRANSFER_SYNTAXES[syntax]).name
    if syntax in COMPRESSED:
        assert ds.file_meta.TransferSyntaxUID.is_compressed
        assert torch.equal(img, read_radiograph(written["explicit_vr_little_endian", pi]))


@pytest.mark.parametrize("syntax", COMPRESSED)
def test_compressed_syntaxes_decode_with_the_pylibjpeg_plugins_alone(
    monkeypatch, written, pixels12, syntax
):
    # whatever else is installed (GDCM is tried first by pydicom), pylibjpeg must decode all
    _need_gdcm(syntax)
    monkeypatch.setattr(
        pydicom.config, "pixel_data_handlers", [numpy_handler, pylibjpeg_handler, rle_handler]
    )
    img = read_radiograph(written[syntax, "MONOCHROME1"])
    np.testing.assert_array_equal(img[0].numpy(), pixels12.astype(np.float32))


def test_monochrome1_is_stored_inverted_and_read_as_the_same_display_image(written, pixels12):
    mono1, mono2 = (
        written["explicit_vr_little_endian", "MONOCHROME1"],
        written["explicit_vr_little_endian", "MONOCHROME2"],
    )
    stored1 = pydicom.dcmread(mono1).pixel_array
    stored2 = pydicom.dcmread(mono2).pixel_array
    np.testing.assert_array_equal(stored2, pixels12)
    np.testing.assert_array_equal(stored1, 4095 - pixels12)
    assert torch.equal(read_radiograph(mono1), read_radiograph(mono2))
    assert pydicom.dcmread(mono1).PresentationLUTShape == "INVERSE"


@pytest.mark.parametrize("bits,dtype", [(8, np.uint8), (10, np.uint16), (16, np.uint16)])
def test_bit_depths_round_trip(tmp_path, bits, dtype):
    rng = np.random.default_rng(bits)
    px = rng.integers(0, 2**bits, (20, 30)).astype(dtype)
    for pi in ("MONOCHROME1", "MONOCHROME2"):
        path = write_dicom(
            tmp_path / f"{bits}{pi}.dcm", px, (0.2, 0.2), bits_stored=bits, photometric=pi
        )
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (
            8 if bits == 8 else 16,
            bits,
            bits - 1,
        )
        np.testing.assert_array_equal(read_radiograph(path)[0].numpy(), px.astype(np.float32))


def test_bits_above_bits_stored_are_ignored(tmp_path, pixels12):
    # stale high bits (old overlays) must not leak into the image
    dirty = (pixels12 | 0xA000).astype("<u2").tobytes()
    path = write_dicom(
        tmp_path / "dirty.dcm", pixels12, (0.2, 0.2), extra_tags={"PixelData": dirty}
    )
    assert pydicom.dcmread(path).pixel_array.max() > 4095
    np.testing.assert_array_equal(read_radiograph(path)[0].numpy(), pixels12.astype(np.float32))


@pytest.mark.parametrize("pi", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("slope,intercept", [(2.0, -100.0), (0.5, 10.0), (-1.5, 3000.0)])
def test_rescale_slope_and_intercept_are_applied(tmp_path, pixels12, pi, slope, intercept):
    path = write_dicom(
        tmp_path / "r.dcm",
        pixels12,
        (0.2, 0.2),
        rescale=(slope, intercept),
        photometric=pi,
        modality="CR",
    )
    img = read_radiograph(path)[0].numpy()
    # the writer stores MONOCHROME1 as 4095 - pixels; the reader rescales, then inverts over
    # the rescaled range [intercept, slope * 4095 + intercept], which gives back
    # slope * pixels + intercept for either interpretation and either sign of the slope
    np.testing.assert_allclose(img, slope * pixels12 + intercept, rtol=0, atol=1e-3)
    assert img.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# spacing


def test_spacing_from_imager_pixel_spacing_and_the_affine(written):
    img = read_radiograph(written["explicit_vr_little_endian", "MONOCHROME2"])
    assert img.meta["spacing_source"] == "ImagerPixelSpacing"
    assert img.meta["pixel_spacing_mm"] == (0.15, 0.2)  # (row, col)
    assert img.affine.dtype == torch.float64 and img.affine.shape == (3, 3)
    assert torch.equal(img.affine, torch.diag(torch.tensor([0.15, 0.2, 1.0], dtype=torch.float64)))
    # (row, col, 1) index → mm: the last pixel sits at (47 * 0.15, 63 * 0.2) mm
    corner = img.affine @ torch.tensor([47.0, 63.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(corner, torch.tensor([7.05, 12.6, 1.0], dtype=torch.float64))
    assert img.meta["filename_or_obj"] == str(written["explicit_vr_little_endian", "MONOCHROME2"])


def test_spacing_from_pixel_spacing(tmp_path, pixels12):
    path = write_dicom(tmp_path / "ps.dcm", pixels12, (0.3, 0.25), spacing_tag="PixelSpacing")
    assert "ImagerPixelSpacing" not in pydicom.dcmread(path)
    img = read_radiograph(path)
    assert (img.meta["spacing_source"], img.meta["pixel_spacing_mm"]) == (
        "PixelSpacing",
        (0.3, 0.25),
    )


def test_imager_pixel_spacing_wins_over_pixel_spacing(tmp_path, pixels12):
    path = write_dicom(
        tmp_path / "both.dcm",
        pixels12,
        (0.15, 0.15),
        spacing_tag="both",
        extra_tags={"PixelSpacing": ["0.1", "0.12"]},
    )
    ds = pydicom.dcmread(path)
    assert [float(v) for v in ds.PixelSpacing] == [0.1, 0.12]
    img = read_radiograph(path)
    assert (img.meta["spacing_source"], img.meta["pixel_spacing_mm"]) == (
        "ImagerPixelSpacing",
        (0.15, 0.15),
    )


def test_invalid_imager_pixel_spacing_falls_back_to_pixel_spacing_with_a_warning(
    tmp_path, pixels12
):
    path = write_dicom(
        tmp_path / "bad_ips.dcm",
        pixels12,
        (0.2, 0.2),
        spacing_tag="both",
        extra_tags={"ImagerPixelSpacing": ["0", "0"]},
    )
    with pytest.warns(
        UserWarning,
        match="ImagerPixelSpacing '0\\\\0' is not two positive numbers; using PixelSpacing",
    ):
        img = read_radiograph(path)
    assert img.meta["spacing_source"] == "PixelSpacing"


def test_no_spacing_needs_user_spacing_and_user_spacing_overrides(tmp_path, pixels12):
    path = write_dicom(tmp_path / "none.dcm", pixels12, (0.2, 0.2), spacing_tag=None)
    with pytest.raises(
        RadiographReadError,
        match=r"no pixel spacing \(ImagerPixelSpacing/PixelSpacing absent\); pass spacing_mm",
    ) as e:
        read_radiograph(path)
    assert_names(e, path)
    img = read_radiograph(path, spacing_mm=(0.18, 0.16))
    assert (img.meta["spacing_source"], img.meta["pixel_spacing_mm"]) == ("user", (0.18, 0.16))
    # the explicit value overrides a file that has its own spacing
    with_tag = write_dicom(tmp_path / "tag.dcm", pixels12, (0.2, 0.2))
    img = read_radiograph(with_tag, spacing_mm=0.1)
    assert (img.meta["spacing_source"], img.meta["pixel_spacing_mm"]) == ("user", (0.1, 0.1))
    assert torch.equal(img.affine.diagonal(), torch.tensor([0.1, 0.1, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("bad", [0, -0.2, (0.1, 0.0), (0.1, 0.2, 0.3), float("nan"), "x"])
def test_invalid_user_spacing_is_a_value_error(written, bad):
    with pytest.raises(ValueError, match="spacing_mm must be a positive number"):
        read_radiograph(written["explicit_vr_little_endian", "MONOCHROME2"], spacing_mm=bad)


# ---------------------------------------------------------------------------------------------
# other formats (SimpleITK)


def _sitk_write(path: Path, arr: np.ndarray, spacing_xy=(0.2, 0.15), vector=False) -> Path:
    image = sitk.GetImageFromArray(arr, isVector=vector)
    image.SetSpacing(spacing_xy if arr.ndim - vector == 2 else (*spacing_xy, 2.0))
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("bits", [8, 16])
def test_png_needs_spacing_even_when_it_carries_a_physical_size(tmp_path, bits):
    rng = np.random.default_rng(bits)
    arr = rng.integers(0, 2**bits, (30, 40)).astype(np.uint8 if bits == 8 else np.uint16)
    path = _sitk_write(tmp_path / f"k{bits}.png", arr)  # ITK stores a pHYs chunk: not trusted
    with pytest.raises(
        RadiographReadError,
        match=r"PNG files carry no trustworthy pixel spacing\); pass spacing_mm",
    ) as e:
        read_radiograph(path)
    assert_names(e, path)
    img = read_radiograph(path, spacing_mm=(0.14, 0.16))
    np.testing.assert_array_equal(img[0].numpy(), arr.astype(np.float32))
    assert img.meta["spacing_source"] == "user" and img.meta["format"] == "PNG"
    assert img.meta["photometric_interpretation"] == "" and img.meta["transfer_syntax"] == ""


@pytest.mark.parametrize(
    "suffix,fmt",
    [(".nrrd", "NRRD"), (".mha", "MetaImage"), (".mhd", "MetaImage"), (".nii.gz", "NIfTI")],
)
def test_header_formats_carry_their_spacing(tmp_path, suffix, fmt):
    arr = np.random.default_rng(3).integers(0, 4096, (30, 40)).astype(np.uint16)
    path = _sitk_write(
        tmp_path / f"k{suffix}", arr, spacing_xy=(0.2, 0.15)
    )  # ITK (x, y) = (col, row)
    img = read_radiograph(path)
    assert img.meta["format"] == fmt and img.meta["spacing_source"] == "header"
    assert img.meta["pixel_spacing_mm"] == (0.15, 0.2)
    np.testing.assert_array_equal(img[0].numpy(), arr.astype(np.float32))
    assert read_radiograph(path, spacing_mm=0.3).meta["spacing_source"] == "user"


def test_a_field_size_gives_a_file_without_a_spacing_its_own(tmp_path):
    """The reader's one spacing rule, for DICOM and the other formats alike: the caller's spacing, else the file's,
    else the field over the file's pixels, else refused."""
    from PIL import Image

    from kneel_monai.io.reading import FieldSize, read_image
    from kneel_monai.transforms.functional import pixel_spacing

    px = np.random.default_rng(5).integers(0, 4096, (30, 40)).astype("<u2")
    bare = write_dicom(tmp_path / "bare.dcm", px, (0.2, 0.2), spacing_tag=None)
    own = write_dicom(tmp_path / "own.dcm", px, (0.25, 0.25))
    png = tmp_path / "export.png"
    Image.fromarray((px // 16).astype(np.uint8)).save(png)
    width, height = FieldSize(width_mm=80.0), FieldSize(height_mm=90.0)
    for path in (bare, png):
        with pytest.raises(RadiographReadError, match="no pixel spacing"):
            read_image(path)
        by_width = read_image(path, field=width)
        assert by_width.meta["pixel_spacing_mm"] == (2.0, 2.0) and by_width.meta["spacing_source"] == "field_width"
        by_height = read_image(path, field=height)
        assert by_height.meta["pixel_spacing_mm"] == (3.0, 3.0) and by_height.meta["spacing_source"] == "field_height"
        assert np.allclose(pixel_spacing(by_width.affine), (2.0, 2.0))
        given = read_image(path, 0.5, field=width)  # the caller's spacing wins
        assert given.meta["pixel_spacing_mm"] == (0.5, 0.5) and given.meta["spacing_source"] == "user"
    kept = read_image(own, field=width)  # a file's own spacing wins over the field
    assert kept.meta["pixel_spacing_mm"] == (0.25, 0.25) and kept.meta["spacing_source"] == "ImagerPixelSpacing"


def test_header_formats_without_spacing_fields_need_spacing(tmp_path):
    arr = np.random.default_rng(4).integers(0, 4096, (30, 40)).astype("<u2")
    nrrd = tmp_path / "nospace.nrrd"
    nrrd.write_bytes(
        b"NRRD0004\ntype: unsigned short\ndimension: 2\nsizes: 40 30\nendian: little\nencoding: raw\n\n"
        + arr.tobytes()
    )
    mha = tmp_path / "nospace.mha"
    mha.write_bytes(
        b"ObjectType = Image\nNDims = 2\nDimSize = 40 30\nElementType = MET_USHORT\nElementDataFile = LOCAL\n"
        + arr.tobytes()
    )
    for path, fmt in ((nrrd, "NRRD"), (mha, "MetaImage")):
        with pytest.raises(
            RadiographReadError, match=f"the {fmt} header sets no pixel spacing"
        ) as e:
            read_radiograph(path)
        assert_names(e, path)
        np.testing.assert_array_equal(
            read_radiograph(path, spacing_mm=0.2)[0].numpy(), arr.astype(np.float32)
        )


def test_a_single_slice_volume_is_a_2d_image(tmp_path):
    arr = np.random.default_rng(5).integers(0, 255, (1, 30, 40)).astype(np.uint8)
    img = read_radiograph(_sitk_write(tmp_path / "one.nrrd", arr))
    assert img.shape == (1, 30, 40) and img.meta["pixel_spacing_mm"] == (0.15, 0.2)


def test_dicom_is_recognised_by_content_not_by_name(tmp_path, written, pixels12):
    disguised = tmp_path / "radiograph.png"
    shutil.copy(written["rle_lossless", "MONOCHROME1"], disguised)
    img = read_radiograph(disguised)
    assert img.meta["format"] == "DICOM"
    np.testing.assert_array_equal(img[0].numpy(), pixels12.astype(np.float32))
    png_as_dcm = _sitk_write(tmp_path / "k.png", pixels12)
    renamed = tmp_path / "image.dcm"
    shutil.copy(png_as_dcm, renamed)
    assert read_radiograph(renamed, spacing_mm=0.2).meta["format"] == "PNG"


def test_preamble_less_dicom_is_read(tmp_path, pixels12):
    source = write_dicom(
        tmp_path / "full.dcm", pixels12, (0.2, 0.25), transfer_syntax="implicit_vr_little_endian"
    )
    ds = pydicom.dcmread(source)
    ds.preamble = None
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    bare = tmp_path / "bare"
    pydicom.dcmwrite(bare, ds, write_like_original=True)
    head = bare.read_bytes()[:132]
    assert head[128:132] != b"DICM" and head[:2] == b"\x08\x00"  # starts with a (0008,xxxx) element
    img = read_radiograph(bare)
    np.testing.assert_array_equal(img[0].numpy(), pixels12.astype(np.float32))
    assert img.meta["pixel_spacing_mm"] == (0.2, 0.25)
    assert img.meta["transfer_syntax"] == "Implicit VR Little Endian"


# ---------------------------------------------------------------------------------------------
# bad input: every one a RadiographReadError that names the file


def _bad_files(folder: Path, pixels: np.ndarray) -> dict[str, tuple[Path, str]]:
    out = {}
    out["missing"] = (folder / "nope.dcm", "file not found")
    (folder / "empty.dcm").write_bytes(b"")
    out["empty"] = (folder / "empty.dcm", r"empty file \(0 bytes\)")
    for syntax in ("explicit_vr_little_endian", "jpeg2000_lossless", "rle_lossless"):
        full = write_dicom(
            folder / f"full_{syntax}.dcm", pixels, (0.2, 0.2), transfer_syntax=syntax
        )
        data = full.read_bytes()
        (folder / f"half_{syntax}.dcm").write_bytes(data[: len(data) // 2])
        out[f"truncated {syntax}"] = (
            folder / f"half_{syntax}.dcm",
            "truncated|corrupt|doesn't match the expected length",
        )
    out["no pixel data"] = (
        write_dicom(folder / "nopix.dcm", pixels, (0.2, 0.2), extra_tags={"PixelData": None}),
        "no pixel data",
    )
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3)).astype(np.uint8)
    out["rgb png"] = (
        _sitk_write(folder / "rgb.png", rgb, vector=True),
        r"a colour image \(RGB channels differ",
    )
    out["multi-frame"] = (
        write_dicom(
            folder / "frames.dcm",
            np.concatenate([pixels, pixels]),
            (0.2, 0.2),
            extra_tags={"NumberOfFrames": 2, "Rows": pixels.shape[0]},
        ),
        r"multi-frame image \(NumberOfFrames 2\)",
    )
    out["3-D nrrd"] = (_sitk_write(folder / "vol.nrrd", np.stack([pixels] * 3)), r"3-D image")
    out["zero-size"] = (
        write_dicom(
            folder / "zero.dcm", pixels, (0.2, 0.2), extra_tags={"Rows": 0, "PixelData": b""}
        ),
        r"zero-size image \(Rows 0",
    )
    out["constant"] = (
        write_dicom(folder / "flat.dcm", np.full((20, 30), 700, np.uint16), (0.2, 0.2)),
        r"constant image \(every pixel is 700\)",
    )
    out["constant png"] = (
        _sitk_write(folder / "flat.png", np.full((20, 30), 9, np.uint8)),
        "constant image",
    )
    out["text"] = (folder / "notes.txt", "not a recognised image file")
    (folder / "notes.txt").write_text("knee radiograph of patient 12\n" * 20)
    out["text named dcm"] = (folder / "notes.dcm", "not a recognised image file")
    (folder / "notes.dcm").write_text("knee radiograph of patient 12\n" * 20)
    out["directory"] = (folder, "is a directory")
    return out


def test_each_bad_input_raises_a_read_error_naming_the_file(tmp_path, pixels12):
    import re

    for label, (path, pattern) in _bad_files(tmp_path, pixels12).items():
        with pytest.raises(RadiographReadError) as e:
            read_radiograph(path, spacing_mm=0.2)  # a spacing, so that only the defect is left
        assert re.search(pattern, str(e.value)), f"{label}: {e.value}"
        assert_names(e, path)
        assert isinstance(e.value, ValueError)


def test_real_rgb_and_multiframe_dicom_are_refused():
    for name, pattern in (
        ("SC_rgb.dcm", "SamplesPerPixel 3"),
        ("emri_small.dcm", "NumberOfFrames 10"),
    ):
        path = pydicom_data_file(name)
        with pytest.raises(RadiographReadError, match=pattern) as e:
            read_radiograph(path, spacing_mm=0.5)
        assert_names(e, path)


def test_a_syntax_without_decoder_names_the_syntax_and_the_package(tmp_path, monkeypatch, pixels12):
    # MPEG-2 video: pydicom 2.x has no decoder for it at all
    mpeg = write_dicom(
        tmp_path / "mpeg.dcm",
        pixels12,
        (0.2, 0.2),
        transfer_syntax="jpeg2000_lossless",
        extra_tags={"TransferSyntaxUID": "1.2.840.10008.1.2.4.100"},
    )
    with pytest.raises(
        RadiographReadError,
        match=(r"no installed decoder for the transfer syntax 'MPEG2 Main Profile / Main Level' "
               r"\(1\.2\.840\.10008\.1\.2\.4\.100\); pydicom .* has no decoder"),
    ) as e:
        read_radiograph(mpeg)
    assert_names(e, mpeg)
    # JPEG 2000 on an installation without its plugins (only pydicom's numpy handler)
    j2k = write_dicom(
        tmp_path / "j2k.dcm", pixels12, (0.2, 0.2), transfer_syntax="jpeg2000_lossless"
    )
    monkeypatch.setattr(pydicom.config, "pixel_data_handlers", [numpy_handler])
    with pytest.raises(
        RadiographReadError,
        match=r"'JPEG 2000 Image Compression \(Lossless Only\)'.*pylibjpeg-openjpeg",
    ) as e:
        read_radiograph(j2k)
    assert_names(e, j2k)
    info = describe_radiograph(j2k)
    assert info["decoder"] is None and "pylibjpeg-openjpeg" in info["problems"][0]


def test_read_error_is_picklable():
    err = RadiographReadError("/x/y.dcm", "file not found")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == "/x/y.dcm: file not found" and back.problem == "file not found"


# ---------------------------------------------------------------------------------------------
# describe_radiograph


def test_describe_reports_the_header_without_decoding(tmp_path, pixels12):
    path = write_dicom(
        tmp_path / "d.dcm",
        pixels12,
        (0.15, 0.2),
        photometric="MONOCHROME1",
        transfer_syntax="jpeg2000_lossless",
        laterality="B",
        patient_id="P-7",
        series_description="Bilateral PA",
        bits_stored=12,
    )
    info = describe_radiograph(path)
    expected = {
        "format": "DICOM",
        "shape": (48, 64),
        "pixel_spacing_mm": (0.15, 0.2),
        "spacing_source": "ImagerPixelSpacing",
        "photometric_interpretation": "MONOCHROME1",
        "transfer_syntax_uid": "1.2.840.10008.1.2.4.90",
        "bits_stored": 12,
        "bits_allocated": 16,
        "modality": "DX",
        "patient_id": "P-7",
        "laterality": "B",
        "series_description": "Bilateral PA",
        "number_of_frames": 1,
        "samples_per_pixel": 1,
        "problems": [],
    }
    assert {k: info[k] for k in expected} == expected
    assert info["decoder"] is not None and info["file_size_bytes"] == path.stat().st_size
    # a header problem is listed, not raised; PNG spacing is reported missing
    png = describe_radiograph(_sitk_write(tmp_path / "x.png", pixels12))
    assert png["format"] == "PNG" and png["shape"] == (48, 64) and png["pixel_spacing_mm"] is None
    assert any("pass spacing_mm" in p for p in png["problems"])
    with pytest.raises(RadiographReadError, match="file not found"):
        describe_radiograph(tmp_path / "missing.dcm")


# ---------------------------------------------------------------------------------------------
# MONAI transforms


def test_load_radiographd_in_a_compose_with_monai_spacing(tmp_path, pixels12):
    dcm = write_dicom(tmp_path / "a.dcm", pixels12, (0.2, 0.1))
    png = _sitk_write(tmp_path / "b.png", pixels12)
    pipeline = Compose(
        [
            LoadRadiographd(keys="image", spacing_key="spacing"),
            EnsureChannelFirstd(keys="image"),  # a no-op: already channel-first
            Spacingd(keys="image", pixdim=(0.4, 0.4), mode="bilinear"),
        ]
    )
    out = pipeline({"image": str(dcm), "label": 3})
    assert out["label"] == 3
    image = out["image"]
    assert isinstance(image, MetaTensor) and image.shape[0] == 1
    # 48 rows at 0.2 mm → ~24 rows at 0.4 mm; 64 cols at 0.1 mm → ~16 cols (MONAI keeps the
    # corner-to-corner extent, so ±1): the affine's (row, col) order holds — swapped it'd be 12 × 32
    assert abs(image.shape[1] - 24) <= 1 and abs(image.shape[2] - 16) <= 1
    torch.testing.assert_close(
        image.affine.diagonal(), torch.tensor([0.4, 0.4, 1.0], dtype=torch.float64)
    )
    out = pipeline({"image": png, "spacing": (0.1, 0.2)})  # per-item spacing from the data
    assert abs(out["image"].shape[1] - 12) <= 1 and abs(out["image"].shape[2] - 32) <= 1
    assert out["image"].meta["spacing_source"] == "user"


def test_load_radiographd_missing_keys_and_the_array_twin(tmp_path, pixels12):
    dcm = write_dicom(tmp_path / "a.dcm", pixels12, (0.2, 0.2))
    loader = LoadRadiographd(keys=["image", "other"], allow_missing_keys=True)
    out = loader({"image": dcm})
    assert set(out) == {"image"} and isinstance(out["image"], MetaTensor)
    with pytest.raises(KeyError):
        LoadRadiographd(keys=["image", "other"])({"image": dcm})
    array = LoadRadiograph(spacing_mm=0.5)
    assert array(dcm).meta["pixel_spacing_mm"] == (0.5, 0.5)
    assert array(dcm, spacing_mm=(0.3, 0.4)).meta["pixel_spacing_mm"] == (0.3, 0.4)
    assert LoadRadiograph()(dcm).meta["spacing_source"] == "ImagerPixelSpacing"
    with pytest.raises(RadiographReadError, match="file not found"):
        loader({"image": tmp_path / "gone.dcm"})


# ---------------------------------------------------------------------------------------------
# the writer itself


@pytest.mark.parametrize("modality", ["DX", "CR"])
def test_writer_makes_valid_dx_and_cr_files(tmp_path, pixels12, modality):
    path = write_dicom(
        tmp_path / "v.dcm", pixels12, (0.15, 0.15), modality=modality, laterality="L", uid_seed="s"
    )
    ds = pydicom.dcmread(path)
    assert path.read_bytes()[128:132] == b"DICM"
    pydicom.dataset.validate_file_meta(ds.file_meta, enforce_standard=True)
    assert ds.SOPClassUID == SOP_CLASSES[modality] == ds.file_meta.MediaStorageSOPClassUID
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID):
        assert uid.is_valid and len(uid) <= 64 and uid.startswith("2.25.")
    assert (ds.Modality, ds.SamplesPerPixel, ds.Rows, ds.Columns) == (modality, 1, 48, 64)
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.15, 0.15]
    if modality == "DX":
        assert ds.PresentationIntentType == "FOR PRESENTATION" and ds.ImageLaterality == "L"
    else:
        assert ds.Laterality == "L"
    assert read_radiograph(path).meta["laterality"] == "L"
    assert [p.name for p in tmp_path.iterdir()] == ["v.dcm"]  # no temporary files left


def test_writer_is_reproducible_with_a_uid_seed(tmp_path, pixels12):
    a = write_dicom(
        tmp_path / "a.dcm",
        pixels12,
        (0.2, 0.2),
        uid_seed="knee-1",
        transfer_syntax="jpeg2000_lossless",
    )
    b = write_dicom(
        tmp_path / "b.dcm",
        pixels12,
        (0.2, 0.2),
        uid_seed="knee-1",
        transfer_syntax="jpeg2000_lossless",
    )
    c = write_dicom(
        tmp_path / "c.dcm", pixels12, (0.2, 0.2), uid_seed="knee-2", study_uid="1.2.3.4"
    )
    d = write_dicom(tmp_path / "d.dcm", pixels12, (0.2, 0.2))
    e = write_dicom(tmp_path / "e.dcm", pixels12, (0.2, 0.2))
    assert a.read_bytes() == b.read_bytes()
    da, dc, dd, de = (pydicom.dcmread(p) for p in (a, c, d, e))
    assert da.SOPInstanceUID != dc.SOPInstanceUID and dc.StudyInstanceUID == "1.2.3.4"
    assert dd.SOPInstanceUID != de.SOPInstanceUID  # unseeded: unique


def test_writer_replaces_atomically_and_validates_its_input(tmp_path, pixels12):
    path = write_dicom(tmp_path / "sub" / "x.dcm", pixels12, (0.2, 0.2))
    first = path.read_bytes()
    write_dicom(path, 4095 - pixels12, (0.2, 0.2))
    assert path.read_bytes() != first
    np.testing.assert_array_equal(
        read_radiograph(path)[0].numpy(), (4095 - pixels12).astype(np.float32)
    )
    with pytest.raises(ValueError, match=r"pixels must lie in \[0, 255\]"):
        write_dicom(tmp_path / "y.dcm", pixels12, (0.2, 0.2), bits_stored=8)
    with pytest.raises(TypeError, match="integer array"):
        write_dicom(tmp_path / "y.dcm", pixels12.astype(np.float32), (0.2, 0.2))
    with pytest.raises(ValueError, match="transfer_syntax must be one of"):
        write_dicom(tmp_path / "y.dcm", pixels12, (0.2, 0.2), transfer_syntax="jpeg_baseline")
    with pytest.raises(ValueError, match="jpeg2000_lossless needs at least 32 pixels a side"):
        write_dicom(
            tmp_path / "y.dcm", pixels12[:31], (0.2, 0.2), transfer_syntax="jpeg2000_lossless"
        )
    with pytest.raises(ValueError, match="unknown DICOM keyword"):
        write_dicom(tmp_path / "y.dcm", pixels12, (0.2, 0.2), extra_tags={"NotAKeyword": 1})
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x.dcm"]
    assert not (tmp_path / "y.dcm").exists()


# --------------------------------------------------------------------------------------
# grey radiographs exported as colour files (PACS viewers, public datasets)


def _grey_knee(seed=3):
    from kneel_monai.synthetic.generate import generate_radiograph

    return generate_radiograph(seed, spacing_mm=0.5, size=(400, 520)).image


def test_grey_jpeg_stored_as_rgb_is_read_as_grey(tmp_path):
    from PIL import Image

    grey = np.round(_grey_knee() * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.int16)
    rgb[..., 0] += np.random.default_rng(1).integers(-1, 2, grey.shape)  # a viewer's rounding in one channel
    path = tmp_path / "export.jpg"
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(path, quality=85)
    img = read_radiograph(path, 0.5)
    assert img.shape == (1, *grey.shape) and img.meta["stored_as"].startswith("grey stored as RGB")
    assert np.abs(img[0].numpy() - grey).mean() < 3.0  # JPEG error only
    assert img.meta["pixel_spacing_mm"] == (0.5, 0.5)


def test_rgba_png_grey_and_opaque_is_read_transparent_is_refused(tmp_path):
    from PIL import Image

    grey = np.round(_grey_knee() * 255).astype(np.uint8)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    img = read_radiograph(tmp_path / "opaque.png", 0.5)
    np.testing.assert_allclose(img[0].numpy(), grey)
    assert "RGBA" in img.meta["stored_as"]
    rgba[:10, :10, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "holes.png")
    with pytest.raises(RadiographReadError, match="holes.png.*transparent"):
        read_radiograph(tmp_path / "holes.png", 0.5)


def test_a_colour_image_is_refused_by_name_even_without_spacing(tmp_path):
    from PIL import Image

    grey = np.round(_grey_knee() * 255).astype(np.uint8)
    photo = np.dstack([grey, grey // 2, 255 - grey])  # a colour picture of the same content
    Image.fromarray(photo, "RGB").save(tmp_path / "photo.jpg", quality=95)
    with pytest.raises(RadiographReadError, match=r"photo.jpg.*a colour image \(RGB channels differ"):
        read_radiograph(tmp_path / "photo.jpg")  # the colour is the problem, not the missing spacing
    overlay = np.repeat(grey[..., None], 3, axis=-1)
    overlay[100:140, 100:300] = [255, 0, 0]  # a red annotation burnt into a grey export
    Image.fromarray(overlay, "RGB").save(tmp_path / "annotated.png")
    with pytest.raises(RadiographReadError, match="a colour image"):
        read_radiograph(tmp_path / "annotated.png", 0.5)
    Image.fromarray(np.dstack([grey, grey]).reshape(*grey.shape, 2)[..., 0], "L").convert("LA").save(
        tmp_path / "grey_alpha.png")
    with pytest.raises(RadiographReadError, match="grey_alpha.png"):  # grey + alpha: SimpleITK has no reader
        read_radiograph(tmp_path / "grey_alpha.png", 0.5)
