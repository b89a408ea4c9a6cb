"""NIfTI writing/reading and labels mapped onto their image through both affines."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medaug import io
from medaug.errors import InputError
from medaug.io.labels import label_on_grid
from medaug.io.nifti import read_nifti, write_volume


def scan_with_label() -> io.Scan:
    rng = np.random.default_rng(1)
    image = rng.integers(-1000, 1000, (10, 12, 6)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[3:6, 4:8, 2:4] = 1
    label[7, 2, 1] = 2
    image[label > 0] = 80.0
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    affine[:3, 3] = [100.0, 120.0, -30.0]
    return io.Scan(image, affine, label)


def test_save_nifti_roundtrip_int16_and_float32(tmp_path: Path) -> None:
    scan = scan_with_label()
    io.save_nifti(scan, tmp_path / "img.nii.gz", label_path=tmp_path / "lab.nii.gz")
    img = nib.load(tmp_path / "img.nii.gz")
    assert img.get_data_dtype() == np.int16
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    data, affine = read_nifti(tmp_path / "img.nii.gz")
    np.testing.assert_array_equal(data, scan.image)
    np.testing.assert_allclose(affine, scan.affine, atol=1e-6)
    assert nib.load(tmp_path / "lab.nii.gz").get_data_dtype() == np.uint8
    fractional = io.Scan(scan.image + 0.25, scan.affine)
    io.save_nifti(fractional, tmp_path / "f.nii")
    assert nib.load(tmp_path / "f.nii").get_data_dtype() == np.float32
    np.testing.assert_array_equal(read_nifti(tmp_path / "f.nii")[0], fractional.image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.nii", "img.nii.gz", "lab.nii.gz"]


@pytest.mark.parametrize("layout", ["same", "flip_y", "flip_xz", "transpose_xy", "padded"])
def test_label_is_mapped_exactly_through_its_affine(tmp_path: Path, layout: str) -> None:
    scan = scan_with_label()
    assert scan.label is not None
    data, affine = scan.label, scan.affine.copy()
    if layout == "flip_y":
        data = data[:, ::-1, :]
        affine = affine @ np.array([[1, 0, 0, 0], [0, -1, 0, 11], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    elif layout == "flip_xz":
        data = data[::-1, :, ::-1]
        affine = affine @ np.array([[-1, 0, 0, 9], [0, 1, 0, 0], [0, 0, -1, 5], [0, 0, 0, 1.0]])
    elif layout == "transpose_xy":
        data = data.transpose(1, 0, 2)
        affine = affine @ np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    elif layout == "padded":  # a label grid larger than the image, shifted by 2 voxels
        data = np.pad(data, 2)
        affine = affine @ np.array([[1, 0, 0, -2], [0, 1, 0, -2], [0, 0, 1, -2], [0, 0, 0, 1.0]])
    write_volume(np.ascontiguousarray(data), affine, tmp_path / "l.nii.gz")
    on_grid, warnings = label_on_grid(tmp_path / "l.nii.gz", scan.shape, scan.affine, scan.image)
    np.testing.assert_array_equal(on_grid, scan.label)
    assert warnings == []


def test_label_on_a_finer_grid_is_resampled_nearest(tmp_path: Path) -> None:
    scan = scan_with_label()
    assert scan.label is not None
    fine = np.repeat(scan.label, 2, axis=2)  # half the slice spacing
    affine = scan.affine @ np.diag([1, 1, 0.5, 1.0])
    affine[:3, 3] = scan.affine[:3, 3] - scan.affine[:3, 2] * 0.25
    write_volume(fine, affine, tmp_path / "fine.nii.gz")
    on_grid, _ = label_on_grid(tmp_path / "fine.nii.gz", scan.shape, scan.affine)
    np.testing.assert_array_equal(on_grid, scan.label)


def test_label_with_other_shape_is_an_error(tmp_path: Path) -> None:
    scan = scan_with_label()
    assert scan.label is not None
    write_volume(scan.label[:, :, :4], scan.affine, tmp_path / "short.nii.gz")
    with pytest.raises(InputError, match=r"short.nii.gz: label grid \(10, 12, 4\) does not match"):
        label_on_grid(tmp_path / "short.nii.gz", scan.shape, scan.affine)


def test_label_elsewhere_in_space_is_an_error(tmp_path: Path) -> None:
    scan = scan_with_label()
    assert scan.label is not None
    shifted = scan.affine.copy()
    shifted[2, 3] += 50
    write_volume(scan.label, shifted, tmp_path / "far.nii.gz")
    with pytest.raises(InputError, match="does not match its image"):
        label_on_grid(tmp_path / "far.nii.gz", scan.shape, scan.affine)


def test_label_on_air_and_empty_label_warn(tmp_path: Path) -> None:
    scan = scan_with_label()
    assert scan.label is not None
    image = scan.image.copy()
    image[scan.label > 0] = -1000
    write_volume(scan.label, scan.affine, tmp_path / "l.nii.gz")
    _, warnings = label_on_grid(tmp_path / "l.nii.gz", scan.shape, scan.affine, image)
    assert len(warnings) == 1 and "average -1000 HU, outside soft tissue" in warnings[0]
    write_volume(np.zeros_like(scan.label), scan.affine, tmp_path / "e.nii.gz")
    _, warnings = label_on_grid(tmp_path / "e.nii.gz", scan.shape, scan.affine, image)
    assert warnings == ["e.nii.gz: label has no foreground voxels"]


def test_non_integer_label_is_an_error(tmp_path: Path) -> None:
    scan = scan_with_label()
    write_volume(scan.image / 7, scan.affine, tmp_path / "float.nii.gz", dtype=np.float32)
    with pytest.raises(InputError, match=r"not integers in 0\.\.255"):
        label_on_grid(tmp_path / "float.nii.gz", scan.shape, scan.affine)


def test_corrupt_header_and_truncated_data(tmp_path: Path) -> None:
    scan = scan_with_label()
    io.save_nifti(scan, tmp_path / "ok.nii")
    raw = (tmp_path / "ok.nii").read_bytes()
    (tmp_path / "bad.nii").write_bytes(b"\x00" * 348 + raw[348:])
    with pytest.raises(InputError, match=r"bad\.nii: corrupt or unreadable NIfTI header"):
        read_nifti(tmp_path / "bad.nii")
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(raw)[:400])
    with pytest.raises(InputError, match=r"cut\.nii\.gz: "):
        read_nifti(tmp_path / "cut.nii.gz")


def test_four_d_images_are_rejected_unless_single_volume(tmp_path: Path) -> None:
    affine = np.eye(4)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 1), np.int16), affine), tmp_path / "one.nii")
    assert read_nifti(tmp_path / "one.nii")[0].shape == (4, 4, 4)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.int16), affine), tmp_path / "three.nii")
    with pytest.raises(InputError, match=r"expected a 3D volume, found shape \(4, 4, 4, 3\)"):
        read_nifti(tmp_path / "three.nii")
