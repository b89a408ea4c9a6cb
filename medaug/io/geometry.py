"""Voxel-to-world geometry: the one place where DICOM/ITK (LPS) meets medaug (RAS).

medaug arrays are indexed (x, y, z) = (i, j, k) like nibabel and MONAI, and a 4x4
affine maps (i, j, k, 1) to RAS millimetres. DICOM and SimpleITK describe the same
geometry in LPS with (z, y, x) arrays; the conversions live here and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import SimpleITK as sitk

#: Flips x and y: LPS <-> RAS (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def dicom_affine(
    orientation: npt.ArrayLike,
    first_position: npt.ArrayLike,
    pixel_spacing: npt.ArrayLike,
    slice_step: npt.ArrayLike,
) -> np.ndarray:
    """RAS affine of a stack of DICOM slices indexed (column, row, slice).

    Args:
        orientation: ImageOrientationPatient, the row then column direction cosines
            (LPS). The first triple points along a row, i.e. along increasing column
            index i.
        first_position: ImagePositionPatient of the first slice (LPS, mm).
        pixel_spacing: PixelSpacing, (row spacing, column spacing) in mm: the
            distance between rows comes first, as PS3.3 C.7.6.2.1.1 defines it.
        slice_step: LPS vector (mm) from one slice's position to the next. Not
            necessarily along the slice normal: a gantry tilt shears the affine,
            which keeps every voxel at its true position.

    Returns:
        (4, 4) float64 affine, voxel (i, j, k) -> RAS mm.
    """
    iop = np.asarray(orientation, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]
    row_spacing, col_spacing = np.asarray(pixel_spacing, dtype=np.float64)[:2]
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = np.asarray(slice_step, dtype=np.float64)
    lps[:3, 3] = np.asarray(first_position, dtype=np.float64)
    return LPS_TO_RAS @ lps


def dicom_slice_geometry(affine: np.ndarray) -> dict[str, list[float]]:
    """The inverse of :func:`dicom_affine` for writing slice k of a volume.

    Returns:
        ``orientation`` (ImageOrientationPatient), ``pixel_spacing`` (PixelSpacing),
        ``origin`` (ImagePositionPatient of slice 0) and ``step`` (LPS mm from one
        slice to the next).
    """
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    col_vec, row_vec = lps[:3, 0], lps[:3, 1]
    col_spacing, row_spacing = float(np.linalg.norm(col_vec)), float(np.linalg.norm(row_vec))
    return {
        "orientation": [*(col_vec / col_spacing).tolist(), *(row_vec / row_spacing).tolist()],
        "pixel_spacing": [row_spacing, col_spacing],
        "origin": lps[:3, 3].tolist(),
        "step": lps[:3, 2].tolist(),
    }


def spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along i, j, k: the column norms of the affine."""
    s = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    return (float(s[0]), float(s[1]), float(s[2]))


def orientation_code(affine: np.ndarray) -> str:
    """Three-letter axis code such as ``LPS`` or ``RAS`` (nibabel's convention:
    the letter is where each voxel axis points to)."""
    import nibabel as nib

    return "".join(str(c) for c in nib.orientations.aff2axcodes(affine))


def corner_indices(shape: tuple[int, ...]) -> np.ndarray:
    """Homogeneous voxel indices (i, j, k, 1) of the 8 corner voxels, shape (8, 4)."""
    return np.array(
        [
            [i, j, k, 1.0]
            for i in (0, shape[0] - 1)
            for j in (0, shape[1] - 1)
            for k in (0, shape[2] - 1)
        ]
    )


def world_corners(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """RAS positions (mm) of the 8 corner voxel centres, shape (8, 3)."""
    return (np.asarray(affine) @ corner_indices(shape).T).T[:, :3]


def to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """SimpleITK image of an (x, y, z) array with a RAS affine.

    The affine must be free of shear (orthogonal columns), as ITK requires.
    """
    import SimpleITK as sitk

    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    sp = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    image.SetSpacing(sp.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection((lps[:3, :3] / sp).flatten().tolist())
    return image


def from_sitk(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(x, y, z) array and RAS affine of a SimpleITK image.

    The array is a copy: a view of the image's buffer (``GetArrayViewFromImage``)
    would point at freed memory once a temporary image (``from_sitk(reader.Execute())``)
    is garbage-collected.
    """
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return array, LPS_TO_RAS @ lps
