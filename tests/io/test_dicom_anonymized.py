"""Series whose identifying UIDs an anonymizer emptied (issue #14, point 1): the file
meta, the folder, SeriesNumber and the pixel data with its geometry stand in for them,
with one warning per series naming what was empty."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, generate_uid
from typer.testing import CliRunner

from medaug import io
from medaug.data.phantom import make_patient
from medaug.io.dicom_write import new_series_info, write_ct_series
from tests.conftest import SMALL

WriteSeries = Callable[..., tuple[Path, np.ndarray, np.ndarray]]

#: What the anonymizer of the issue left empty (present, zero length).
EMPTIED = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def empty(folder: Path, keywords: tuple[str, ...], meta: tuple[str, ...] = ()) -> None:
    """Set ``keywords`` (and file meta ``meta``) to empty values in every file."""
    for path in files_in(folder):
        ds = pydicom.dcmread(path)
        for keyword in keywords:
            setattr(ds, keyword, "")
        for keyword in meta:
            setattr(ds.file_meta, keyword, "")
        ds.save_as(path)


def anonymized(write_series: WriteSeries, name: str = "anon") -> tuple[Path, np.ndarray]:
    """The issue's export: JPEG 2000 lossless, no file extension, four UIDs empty."""
    folder, image, _ = write_series(name, transfer_syntax=JPEG2000Lossless, file_pattern="IM{:04d}")
    empty(folder, EMPTIED)
    return folder, image


def test_empty_uids_jpeg2000_without_extension_read_like_the_normal_series(
    write_series: WriteSeries,
) -> None:
    normal_folder, image, affine = write_series("normal")
    folder, _ = anonymized(write_series)
    assert all(p.suffix == "" for p in files_in(folder))
    assert pydicom.dcmread(files_in(folder)[0]).SOPClassUID == ""

    found = io.discover(folder)
    assert len(found) == 1 and found[0].usable, [r.error for r in found]
    assert found.notes == []
    scan = io.load(found[0])
    normal = io.load(io.discover(normal_folder)[0])
    np.testing.assert_array_equal(scan.image, normal.image)
    np.testing.assert_array_equal(scan.image, image)
    np.testing.assert_allclose(scan.affine, normal.affine, atol=1e-6)
    np.testing.assert_allclose(scan.affine, affine, atol=1e-5)
    assert scan.provenance["transfer_syntaxes"] == [JPEG2000Lossless]
    (warning,) = scan.warnings  # one warning for the series, not one per file
    assert warning.startswith("anon: 12 file(s) have empty ")
    assert all(name in warning for name in EMPTIED)
    assert "FrameOfReferenceUID" not in warning
    assert "SOP class taken from the file meta (MediaStorageSOPClassUID)" in warning
    assert "grouped by folder, study, frame of reference, series number" in warning


def test_inspect_and_convert_read_the_anonymized_series(
    write_series: WriteSeries, tmp_path: Path
) -> None:
    """The commands of the issue report, in process: the series is found and converted."""
    from medaug.cli import app

    folder, image = anonymized(write_series)
    runner = CliRunner()
    inspected = runner.invoke(app, ["inspect", str(folder), "--json", "--workers", "1"])
    assert inspected.exit_code == 0, inspected.output
    assert "not an image slice" not in inspected.output
    out = tmp_path / "nifti"
    converted = runner.invoke(app, ["convert", str(folder), str(out), "--workers", "1"])
    assert converted.exit_code == 0, converted.output
    assert "Converted 1 scan(s)" in converted.output
    scan = io.load(out / "images" / "case_0000.nii.gz")
    np.testing.assert_array_equal(scan.image.astype(np.float32), image)


def test_empty_file_meta_too_judges_the_slice_by_pixel_data_and_geometry(
    write_series: WriteSeries,
) -> None:
    folder, image, _ = write_series("bare", file_pattern="{:03d}")
    empty(folder, EMPTIED, meta=("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID"))
    scan = load_one(folder)
    np.testing.assert_array_equal(scan.image, image)
    (warning,) = scan.warnings
    assert "taken as image slices by their pixel data and geometry" in warning


def test_empty_sop_class_without_geometry_is_not_taken_for_a_slice(
    write_series: WriteSeries,
) -> None:
    folder, _, _ = write_series("no_geometry", file_pattern="{:03d}")
    empty(folder, EMPTIED, meta=("MediaStorageSOPClassUID",))
    victim = files_in(folder)[0]
    ds = pydicom.dcmread(victim)
    del ds.ImageOrientationPatient
    ds.save_as(victim)
    found = io.discover(folder)
    assert any(
        n.path == "001" and n.level == "error" and "not an image" in n.message for n in found.notes
    )


def test_missing_and_empty_uids_are_told_apart(write_series: WriteSeries) -> None:
    folder, image, _ = write_series("mixed", file_pattern="{:03d}")
    for path in files_in(folder):
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ""
        del ds.FrameOfReferenceUID
        ds.save_as(path)
    scan = load_one(folder)
    np.testing.assert_array_equal(scan.image, image)
    assert scan.warnings == [
        "mixed: 12 file(s) have empty SOPInstanceUID and lack FrameOfReferenceUID"
    ]


def test_a_few_files_with_empty_uids_are_named(write_series: WriteSeries) -> None:
    folder, image, _ = write_series("few", file_pattern="{:03d}")
    victim = files_in(folder)[6]
    ds = pydicom.dcmread(victim)
    ds.SOPClassUID = ""
    ds.save_as(victim)
    scan = load_one(folder)
    np.testing.assert_array_equal(scan.image, image)
    assert scan.warnings == [
        "few: 1 file(s) (007) have empty SOPClassUID; "
        "SOP class taken from the file meta (MediaStorageSOPClassUID)"
    ]


def write_phantom(folder: Path, index: int, series_number: int, study: str) -> np.ndarray:
    """Patient ``index`` as one series of study ``study`` with ``series_number``."""
    scan, _ = make_patient(index, seed=0, config=SMALL)
    info = new_series_info("TEST^SERIES", "TEST01", entropy=["anon", study])
    uid = generate_uid(entropy_srcs=["anon", study, str(series_number)])
    info = dataclasses.replace(info, series_number=series_number, series_uid=str(uid))
    write_ct_series(scan.image, scan.affine, folder, info, file_pattern=f"s{series_number}-{{}}")
    return scan.image


def test_without_series_uid_two_series_of_one_study_in_one_folder_stay_apart(
    tmp_path: Path,
) -> None:
    """Same study, frame of reference, grid and positions: only SeriesNumber tells them
    apart (an arterial and a venous phase, say)."""
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    images = {}
    for number, index in ((2, 0), (3, 1)):
        images[number] = write_phantom(tmp_path / f"s{number}", index, number, study="one")
        for p in files_in(tmp_path / f"s{number}"):
            shutil.move(p, mixed / p.name)
    empty(mixed, ("SeriesInstanceUID",))
    found = io.discover(mixed)
    assert len(found) == 2 and all(r.usable for r in found), [r.error for r in found]
    for ref, number in zip(found, (2, 3), strict=True):
        assert {p.name[:2] for p in ref.files} == {f"s{number}"}
        np.testing.assert_array_equal(io.load(ref).image, images[number])


def test_without_series_uid_one_series_per_folder(tmp_path: Path) -> None:
    """The same study, frame of reference and SeriesNumber in two folders (two exports
    of one anonymized series, say) are two scans, not one series of duplicates."""
    for name, index in (("a", 0), ("b", 1)):
        write_phantom(tmp_path / name, index, 1, study="one")
        empty(tmp_path / name, EMPTIED)
    found = io.discover(tmp_path)
    assert [r.source.name for r in found] == ["a", "b"]
    assert all(r.usable for r in found)


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not installed")
def test_anonymized_series_matches_dcm2niix(write_series: WriteSeries, tmp_path: Path) -> None:
    from tests.io.test_dcm2niix import assert_same_world_voxels, dcm2niix

    folder, _ = anonymized(write_series)
    ref, ref_affine = dcm2niix(folder, tmp_path / "ref")
    scan = load_one(folder)
    assert_same_world_voxels(scan.image, scan.affine, ref, ref_affine)


def load_one(folder: Path) -> io.Scan:
    found = io.discover(folder)
    assert len(found) == 1, [r.error for r in found]
    return io.load(found[0])
