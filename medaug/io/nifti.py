"""NIfTI reading and writing (nibabel), with header checks and atomic writes."""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from medaug.errors import InputError
from medaug.io.atomic import atomic_path
from medaug.io.scan import Scan

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def open_nifti(path: Path) -> nib.Nifti1Image:
    """Open a NIfTI file lazily (header only) and check that it is a 3D volume.

    Raises:
        InputError: the header is corrupt, the file is not NIfTI, or the image is not
            3D (a 4D image with one volume is accepted).
    """
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise InputError(path, "file does not exist") from None
    except Exception as exc:  # nibabel raises ImageFileError, HeaderDataError, ValueError, ...
        raise InputError(
            path, f"corrupt or unreadable NIfTI header ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(path, f"not a NIfTI image ({type(img).__name__})")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        pass
    elif len(shape) != 3:
        raise InputError(path, f"expected a 3D volume, found shape {shape}")
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < 1e-9:
        raise InputError(path, "header holds no usable voxel-to-world affine")
    return img


def read_nifti(path: Path, dtype: type | None = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D NIfTI volume.

    Returns:
        ((X, Y, Z) array with scl_slope/scl_inter applied, (4, 4) RAS affine).

    Raises:
        InputError: corrupt header, truncated or corrupt data, not 3D.
    """
    img = open_nifti(path)
    try:
        data: np.ndarray = np.asarray(img.dataobj, dtype=dtype)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise InputError(
            path, f"truncated or corrupt image data ({type(exc).__name__}: {exc})"
        ) from None
    if data.ndim == 4:
        data = data[..., 0]
    return data, np.array(img.affine, dtype=np.float64)


def _is_integral(array: np.ndarray, lo: float, hi: float) -> bool:
    if array.size == 0:
        return True
    amin, amax = float(array.min()), float(array.max())
    return lo <= amin and amax <= hi and bool(np.all(np.mod(array, 1) == 0))


def write_volume(
    array: np.ndarray, affine: np.ndarray, path: Path, *, dtype: type | None = None
) -> Path:
    """Write one 3D array as NIfTI, atomically; sform and qform both set (scanner).

    Args:
        array: (X, Y, Z) volume.
        affine: (4, 4) RAS affine.
        path: ``.nii`` or ``.nii.gz`` target.
        dtype: on-disk type; default keeps the array's own type.
    """
    data = array if dtype is None else array.astype(dtype, copy=False)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def save_nifti(scan: Scan, path: str | Path, *, label_path: str | Path | None = None) -> Path:
    """Write a scan's image (and optionally its label) as NIfTI.

    The image is stored as int16 HU when every voxel is a whole number in the int16
    range (true for DICOM with integer RescaleSlope/Intercept), else as float32, so
    HU values are always kept exactly. The label is stored as uint8.

    Args:
        scan: the scan to write.
        path: image target (``.nii.gz`` compresses).
        label_path: where to write ``scan.label``; ignored when the scan has none.

    Returns:
        the image path.
    """
    path = Path(path)
    dtype = np.int16 if _is_integral(scan.image, -32768, 32767) else np.float32
    write_volume(scan.image, scan.affine, path, dtype=dtype)
    if label_path is not None and scan.label is not None:
        write_volume(scan.label, scan.affine, Path(label_path), dtype=np.uint8)
    return path
