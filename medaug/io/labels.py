"""Putting a label map onto its image's voxel grid, through both affines.

Labels are never assumed to share the image's array layout: TCIA Pancreas-CT labels,
for one, are stored with axes flipped relative to the DICOM pixel order. The label
is read with its own affine and mapped onto the image grid: exactly (axis flips and
transposes, integer shifts) when the two grids coincide, by nearest-neighbour
resampling otherwise. A label whose grid does not cover the image is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medaug.errors import InputError
from medaug.io import geometry
from medaug.io.nifti import read_nifti

#: Index-space slack (voxels) when deciding whether the label grid covers the image.
COVER_TOL_VOX = 0.01
#: Mean HU inside a label outside this range means it sits on air or bone: likely
#: flipped or misaligned. The pancreas and other abdominal organs are 0..200 HU.
SOFT_TISSUE_HU = (-200.0, 300.0)


def _as_signed_permutation(m: np.ndarray, tol: float = 1e-4) -> bool:
    r = np.round(m)
    return bool(
        np.allclose(m, r, atol=tol)
        and np.all(np.abs(r).sum(axis=0) == 1)
        and np.all(np.abs(r).sum(axis=1) == 1)
    )


def label_on_grid(
    label_path: Path,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    image: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Read a label NIfTI and map it onto an image grid.

    Args:
        label_path: the label file.
        shape: image shape (X, Y, Z).
        affine: image RAS affine.
        image: the HU image, to check that the label lies on soft tissue.

    Returns:
        ((X, Y, Z) uint8 label on the image grid, warnings).

    Raises:
        InputError: unreadable label, non-integer or negative values, or a grid that
            does not cover the image.
    """
    # native dtype: a uint8 label of a 512^2 x 200 scan stays 50 MB instead of 200
    data, label_affine = read_nifti(label_path, dtype=None)
    if data.size and (
        data.min() < 0
        or data.max() > 255
        or (data.dtype.kind == "f" and not np.array_equal(data, np.floor(data)))
    ):
        raise InputError(label_path, "label holds values that are not integers in 0..255")
    data = data.astype(np.uint8, copy=False)
    # label voxel index of each image voxel index: l = T @ i
    t = np.linalg.inv(label_affine) @ np.asarray(affine, dtype=np.float64)
    mapped = (t @ geometry.corner_indices(shape).T)[:3]
    lo, hi = mapped.min(axis=1), mapped.max(axis=1)
    limit = np.array(data.shape, dtype=np.float64) - 0.5
    if np.any(lo < -0.5 - COVER_TOL_VOX) or np.any(hi > limit + COVER_TOL_VOX):
        label_box = geometry.world_corners(label_affine, data.shape)
        image_box = geometry.world_corners(affine, shape)
        raise InputError(
            label_path,
            f"label grid {data.shape} does not match its image {tuple(shape)}: label spans "
            f"{_box(label_box)} mm, image spans {_box(image_box)} mm",
        )
    if _as_signed_permutation(t[:3, :3]) and np.allclose(t[:3, 3], np.round(t[:3, 3]), atol=1e-3):
        on_grid = _permute(data, np.round(t).astype(int), shape)
    else:
        import nibabel as nib
        from nibabel.processing import resample_from_to

        resampled = resample_from_to(
            nib.Nifti1Image(data, label_affine), (shape, affine), order=0, mode="constant", cval=0
        )
        on_grid = np.asarray(resampled.dataobj, dtype=np.uint8)
    warnings = []
    if not on_grid.any():
        warnings.append(f"{label_path.name}: label has no foreground voxels")
    elif image is not None:
        # boolean indexing walks memory order; .T makes x-fastest arrays C-ordered
        mean_hu = float(image.T[on_grid.T > 0].mean())
        if not SOFT_TISSUE_HU[0] <= mean_hu <= SOFT_TISSUE_HU[1]:
            warnings.append(
                f"{label_path.name}: labelled voxels average {mean_hu:.0f} HU, outside soft tissue "
                f"({SOFT_TISSUE_HU[0]:.0f}..{SOFT_TISSUE_HU[1]:.0f}); "
                "is the label flipped or misaligned?"
            )
    return on_grid, warnings


def _box(corners: np.ndarray) -> str:
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    return f"x[{lo[0]:.1f},{hi[0]:.1f}] y[{lo[1]:.1f},{hi[1]:.1f}] z[{lo[2]:.1f},{hi[2]:.1f}]"


def _permute(data: np.ndarray, t: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Exact index mapping for a signed-permutation ``t`` (image index -> label index)."""
    out = data
    # axis of the label that each image axis reads, and its sign
    src_axes = [int(np.nonzero(t[:3, a])[0][0]) for a in range(3)]
    signs = [int(t[src_axes[a], a]) for a in range(3)]
    out = np.transpose(out, src_axes)
    slices = []
    for a in range(3):
        start = int(t[src_axes[a], 3])
        if signs[a] > 0:
            slices.append(slice(start, start + shape[a]))
        else:
            stop = start - shape[a]
            slices.append(slice(start, stop if stop >= 0 else None, -1))
    # x fastest in memory, like the images medaug reads: later steps copy nothing
    return np.asfortranarray(out[tuple(slices)])
