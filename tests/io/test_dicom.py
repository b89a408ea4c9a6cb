"""DICOM series reading: sorting, spacing, rescale, compression, and every deviation
the reader must detect (duplicates, gaps, tilt, mixed grids, non-image objects)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from medaug import io
from medaug.errors import MedaugError
from medaug.io import dicom
from tests.conftest import series_files

WriteSeries = Callable[..., tuple[Path, np.ndarray, np.ndarray]]


def shipped(name: str) -> Path:
    """A test file that ships inside pydicom's wheel (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not shipped with this pydicom"
    return Path(path)


def edit(folder: Path, change: Callable[[pydicom.Dataset, int], None]) -> None:
    for k, path in enumerate(series_files(folder)):
        ds = pydicom.dcmread(path)
        change(ds, k)
        ds.save_as(path)


def load_one(folder: Path) -> io.Scan:
    found = io.discover(folder)
    assert len(found) == 1, [r.error for r in found]
    return io.load(found[0])


def test_roundtrip_keeps_voxels_and_affine(write_series: WriteSeries) -> None:
    folder, image, affine = write_series()
    scan = load_one(folder)
    assert scan.image.dtype == np.float32
    np.testing.assert_array_equal(scan.image, image)
    np.testing.assert_allclose(scan.affine, affine, atol=1e-5)
    assert scan.orientation == "LPS"
    assert scan.spacing == pytest.approx((6.25, 6.25, 2.5))
    assert scan.provenance["kind"] == "dicom"
    assert "PatientName" not in str(scan.provenance) and "TEST01" not in str(scan.provenance)


def test_sorting_uses_positions_not_names_or_instance_numbers(write_series: WriteSeries) -> None:
    folder, image, _ = write_series()
    files = series_files(folder)
    rng = np.random.default_rng(0)
    for src, new in zip(files, rng.permutation(len(files)), strict=True):
        src.rename(folder / f"tmp{new:03d}.dcm")
    edit(folder, lambda ds, k: setattr(ds, "InstanceNumber", 100 - k))
    np.testing.assert_array_equal(load_one(folder).image, image)


def test_slice_spacing_comes_from_positions_not_slice_thickness(write_series: WriteSeries) -> None:
    folder, _, affine = write_series()
    edit(folder, lambda ds, k: setattr(ds, "SliceThickness", "5.0"))
    scan = load_one(folder)
    assert scan.spacing[2] == pytest.approx(2.5)
    np.testing.assert_allclose(scan.affine, affine, atol=1e-5)


def test_signed_pixels(write_series: WriteSeries) -> None:
    folder, image, _ = write_series(signed=True)
    assert pydicom.dcmread(series_files(folder)[0]).PixelRepresentation == 1
    np.testing.assert_array_equal(load_one(folder).image, image)


def test_rescale_slope_and_intercept_per_slice(write_series: WriteSeries) -> None:
    folder, image, _ = write_series()  # stored = HU + 1024

    def rescale(ds: pydicom.Dataset, k: int) -> None:
        ds.RescaleSlope, ds.RescaleIntercept = "2", "-2048" if k != 3 else "-2000"

    edit(folder, rescale)
    expected = 2 * image
    expected[:, :, 3] += 48
    np.testing.assert_array_equal(load_one(folder).image, expected)


def test_oblique_orientation(write_series: WriteSeries) -> None:
    a, b = np.radians(20), np.radians(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-6.25, -6.25, 2.5])
    affine[:3, 3] = [12.0, -30.0, 55.5]
    folder, image, _ = write_series(affine=affine)
    scan = load_one(folder)
    np.testing.assert_allclose(scan.affine, affine, atol=1e-4)
    np.testing.assert_array_equal(scan.image, image)
    assert scan.warnings == []


def test_gantry_tilt_keeps_true_positions_with_a_sheared_affine(write_series: WriteSeries) -> None:
    affine = np.diag([-6.25, -6.25, 2.5, 1.0])
    affine[1, 2] = 2.5 * np.tan(np.radians(15))  # each slice shifts along y: a tilted gantry
    folder, image, _ = write_series(affine=affine)
    scan = load_one(folder)
    np.testing.assert_allclose(scan.affine, affine, atol=1e-4)
    np.testing.assert_array_equal(scan.image, image)
    assert any("tilted 15.00 deg" in w for w in scan.warnings)


def test_missing_slice_is_interpolated_and_reported(write_series: WriteSeries) -> None:
    folder, image, affine = write_series()
    series_files(folder)[5].unlink()
    found = io.discover(folder)
    assert any("1 missing slice" in w for w in found[0].warnings)
    scan = io.load(found[0])
    assert scan.shape == image.shape
    np.testing.assert_allclose(scan.affine, affine, atol=1e-5)
    keep = [k for k in range(image.shape[2]) if k != 5]
    np.testing.assert_array_equal(scan.image[:, :, keep], image[:, :, keep])
    np.testing.assert_allclose(
        scan.image[:, :, 5], (image[:, :, 4] + image[:, :, 6]) / 2, atol=1e-3
    )
    assert scan.provenance["interpolated_slices"] is True


def test_irregular_spacing_is_resampled(write_series: WriteSeries) -> None:
    folder, image, _ = write_series()

    def shift(ds: pydicom.Dataset, k: int) -> None:
        if k == 4:
            ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 0.5

    edit(folder, shift)
    scan = load_one(folder)
    assert any("non-uniform slice spacing" in w for w in scan.warnings)
    assert scan.spacing[2] == pytest.approx(2.5)
    # slice 4 moved up by 0.5 mm = 0.2 steps: grid slice 4 lies between sources 3 and 4
    expected = image[:, :, 3] + (image[:, :, 4] - image[:, :, 3]) * (2.5 / 3.0)
    np.testing.assert_allclose(scan.image[:, :, 4], expected, atol=1e-3)


def test_duplicate_slice_with_equal_pixels_is_dropped(write_series: WriteSeries) -> None:
    folder, image, _ = write_series()
    ds = pydicom.dcmread(series_files(folder)[2])
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(folder / "copy.dcm")
    scan = load_one(folder)
    np.testing.assert_array_equal(scan.image, image)
    assert any("copy.dcm: duplicate of" in w for w in scan.warnings)


def test_duplicate_position_with_different_pixels_is_an_error(write_series: WriteSeries) -> None:
    folder, _, _ = write_series()
    ds = pydicom.dcmread(series_files(folder)[2])
    ds.SOPInstanceUID = generate_uid()
    ds.PixelData = (ds.pixel_array + 7).astype(np.uint16).tobytes()
    ds.save_as(folder / "other.dcm")
    found = io.discover(folder)
    assert found[0].error is not None
    assert "other.dcm" in found[0].error and "different pixels" in found[0].error
    with pytest.raises(MedaugError, match="different pixels"):
        io.load(found[0])


def test_fewer_than_three_slices_is_an_error(write_series: WriteSeries) -> None:
    folder, _, _ = write_series()
    for path in series_files(folder)[2:]:
        path.unlink()
    found = io.discover(folder)
    expected = "series has 2 slice(s) (1-001.dcm, 1-002.dcm); a volume needs 3"
    assert found[0].error == f"series: {expected}"


def test_missing_series_uid_falls_back_with_a_warning(write_series: WriteSeries) -> None:
    folder, image, _ = write_series()
    edit(folder, lambda ds, k: delattr(ds, "SeriesInstanceUID"))
    scan = load_one(folder)
    np.testing.assert_array_equal(scan.image, image)
    assert any("lack SeriesInstanceUID" in w for w in scan.warnings)


def test_two_series_in_one_folder_are_two_scans(write_series: WriteSeries, tmp_path: Path) -> None:
    first, image0, _ = write_series("a", index=0)
    second, image1, _ = write_series("b", index=1)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for folder, tag in ((first, "a"), (second, "b")):
        for p in series_files(folder):
            shutil.copy(p, mixed / f"{tag}{p.name}")
    found = io.discover(mixed)
    assert len(found) == 2
    images = sorted((io.load(r).image for r in found), key=lambda a: float(a.sum()))
    expected = sorted((image0, image1), key=lambda a: float(a.sum()))
    for got, want in zip(images, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_mixed_orientations_in_one_uid_are_split(write_series: WriteSeries) -> None:
    folder, _, _ = write_series("axial")
    coronal = np.array([[-6.25, 0, 0, 0], [0, 0, 2.5, 0], [0, 6.25, 0, 0], [0, 0, 0, 1.0]])
    other, _, _ = write_series("coronal", affine=coronal)
    uid = pydicom.dcmread(series_files(folder)[0]).SeriesInstanceUID
    for p in series_files(other):
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = uid
        ds.save_as(folder / f"cor-{p.name}")
    found = io.discover(folder)
    assert len(found) == 2
    assert all(r.usable for r in found)
    assert all(any("mixed orientations or pixel grids" in w for w in r.warnings) for r in found)
    assert {io.load(r).orientation for r in found} == {"LPS", "LSA"}


def test_localizer_and_non_image_objects_are_skipped_with_notes(
    write_series: WriteSeries,
) -> None:
    folder, image, _ = write_series()
    ds = pydicom.dcmread(series_files(folder)[0])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SOPInstanceUID = generate_uid()
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.save_as(folder / "scout.dcm")
    for name in ("rtstruct.dcm", "rtdose.dcm", "test-SR.dcm"):
        shutil.copy(shipped(name), folder / name)
    shutil.copy(shipped("dicomdirtests/DICOMDIR"), folder / "DICOMDIR")
    (folder / "README.txt").write_text("not a scan")
    found = io.discover(folder)
    assert len(found) == 1
    np.testing.assert_array_equal(io.load(found[0]).image, image)
    notes = {Path(n.path).name: n.message for n in found.notes}
    assert notes["scout.dcm"] == "skipped: localizer (scout) image"
    assert "RT Structure Set Storage" in notes["rtstruct.dcm"]
    assert "RT Dose Storage" in notes["rtdose.dcm"]
    assert "not an image slice" in notes["test-SR.dcm"]
    assert notes["DICOMDIR"] == "skipped: DICOMDIR index file"
    assert "README.txt" not in notes


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, RLELossless, JPEGLSLossless])
def test_compressed_series_decode_to_the_same_voxels(
    write_series: WriteSeries, syntax: str
) -> None:
    folder, image, _ = write_series(transfer_syntax=syntax)
    assert pydicom.dcmread(series_files(folder)[0]).file_meta.TransferSyntaxUID == syntax
    scan = load_one(folder)
    np.testing.assert_array_equal(scan.image, image)
    assert scan.provenance["transfer_syntaxes"] == [syntax]


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]
)
def test_shipped_compressed_files_decode_like_the_uncompressed_one(name: str) -> None:
    reference = dicom._read_slice(shipped("MR_small.dcm"), 64, 64)
    np.testing.assert_array_equal(dicom._read_slice(shipped(name), 64, 64), reference)


def test_undecodable_transfer_syntax_is_named(write_series: WriteSeries) -> None:
    folder, _, _ = write_series()
    path = series_files(folder)[0]
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder exists
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    ds.save_as(path, enforce_file_format=True)
    found = io.discover(folder)
    assert found[0].error is not None
    assert "no decoder installed for transfer syntax 1.2.840.10008.1.2.4.100" in found[0].error
    assert path.name in found[0].error


def test_non_ct_modality_is_reported(write_series: WriteSeries) -> None:
    folder, _, _ = write_series()
    edit(folder, lambda ds, k: setattr(ds, "Modality", "MR"))
    edit(folder, lambda ds, k: setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.4"))
    scan = load_one(folder)
    assert any("modality MR, not CT" in w for w in scan.warnings)


def test_header_of_pydicom_ct_small() -> None:
    headers = dicom.read_headers(shipped("CT_small.dcm"))
    assert isinstance(headers, list) and len(headers) == 1
    header = headers[0]
    assert header.position == pytest.approx((-158.135803, -179.035797, -75.699997))
    assert header.pixel_spacing == pytest.approx((0.661468, 0.661468))
    assert (header.rows, header.columns) == (128, 128)
    assert header.intercept == -1024.0 and header.slope == 1.0
    assert header.modality == "CT"


def test_non_dicom_file_is_not_a_header(tmp_path: Path) -> None:
    path = tmp_path / "notes"
    path.write_bytes(b"just some text, no preamble" * 10)
    assert dicom.read_headers(path) is None


@pytest.mark.parametrize("signed", [False, True])
def test_direct_pixel_read_matches_pydicom_decoding(
    write_series: WriteSeries, signed: bool
) -> None:
    """The native fast path (np.fromfile at the recorded offset) must agree with
    pydicom's decoder, including bits above BitsStored: garbage masked off when
    unsigned, sign extension when signed."""
    folder, _, _ = write_series(signed=signed)
    path = series_files(folder)[3]
    ds = pydicom.dcmread(path)
    words = np.frombuffer(ds.PixelData, dtype="<i2" if signed else "<u2").copy().reshape(64, 64)
    if signed:
        ds.BitsStored, ds.HighBit = 12, 11
        words[:8] = -1500  # within 12 bits signed: two's complement with the high bits set
        words[8:16] = (words[8:16] & 0x0FFF) | 0x0800  # negative 12-bit values, high nibble clear
    else:
        words[:8] |= np.uint16(0xF000)  # overlay-style garbage above bit 11
    ds.PixelData = words.tobytes()
    ds.save_as(path)
    headers = dicom.read_headers(path)
    assert isinstance(headers, list)
    header = headers[0]
    assert header.pixels.offset is not None
    fast = dicom._read_slice(path, 64, 64, header.pixels)
    slow = dicom._read_slice(path, 64, 64)
    np.testing.assert_array_equal(fast, slow)
    if signed:
        assert fast.min() < 0 and fast[:8].max() == -1500
    else:
        assert fast.max() < 4096
