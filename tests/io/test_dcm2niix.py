"""Geometry against dcm2niix: every voxel at the same world position with the same HU.

dcm2niix (Debian's package) is the reference the field uses for DICOM -> NIfTI. These
tests skip where it is not installed; CI installs it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medaug import io
from medaug.io.nifti import read_nifti

pytestmark = pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not installed")


def dcm2niix(folder: Path, out: Path) -> tuple[np.ndarray, np.ndarray]:
    out.mkdir()
    subprocess.run(
        ["dcm2niix", "-z", "n", "-b", "n", "-f", "ref", "-o", str(out), str(folder)],
        check=True,
        capture_output=True,
    )
    (nii,) = out.glob("ref*.nii")
    img = nib.load(nii)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def assert_same_world_voxels(
    ours: np.ndarray, our_affine: np.ndarray, ref: np.ndarray, ref_affine: np.ndarray
) -> None:
    """Map each of our voxel indices into the reference grid; it must land on a voxel
    centre there, and hold the same value."""
    t = np.linalg.inv(ref_affine) @ our_affine
    assert np.allclose(t, np.round(t), atol=1e-3), f"grids do not coincide:\n{t}"
    t = np.round(t).astype(int)
    idx = np.indices(ours.shape).reshape(3, -1)
    mapped = t[:3, :3] @ idx + t[:3, 3:4]
    assert (mapped >= 0).all() and (mapped < np.array(ref.shape)[:, None]).all()
    np.testing.assert_array_equal(ours.reshape(-1), ref[tuple(mapped)])


WriteSeries = Callable[..., tuple[Path, np.ndarray, np.ndarray]]


def oblique() -> np.ndarray:
    a = np.radians(25)
    affine = np.eye(4)
    affine[:3, :3] = np.array(
        [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    ) @ np.diag([-6.25, -6.25, 2.5])
    affine[:3, 3] = [40.0, -12.5, 7.0]
    return affine


@pytest.mark.parametrize(
    ("affine", "signed"),
    [(None, False), (None, True), ("oblique", False)],
    ids=["axial", "signed", "oblique"],
)
def test_dicom_to_scan_matches_dcm2niix(
    write_series: WriteSeries, tmp_path: Path, affine: str | None, signed: bool
) -> None:
    folder, _, _ = write_series(affine=oblique() if affine == "oblique" else None, signed=signed)
    ref, ref_affine = dcm2niix(folder, tmp_path / "ref")
    scan = io.load(io.discover(folder)[0])
    assert_same_world_voxels(scan.image, scan.affine, ref, ref_affine)


def test_converted_nifti_matches_dcm2niix(dicom_cohort: Path, tmp_path: Path) -> None:
    """The full path a user takes: DICOM -> Scan -> NIfTI file on disk."""
    ref_folder = next(p.parent for p in sorted(dicom_cohort.rglob("1-001.dcm")))
    ref, ref_affine = dcm2niix(ref_folder, tmp_path / "ref")
    scan = io.load(io.discover(ref_folder)[0])
    io.save_nifti(scan, tmp_path / "ours.nii.gz")
    ours, our_affine = read_nifti(tmp_path / "ours.nii.gz")
    assert_same_world_voxels(ours, our_affine, ref, ref_affine)
