"""Classical augmentation: the random spatial and intensity transforms segmentation
pipelines use today (TorchIO's usual set, built from MONAI dictionary transforms).

Applied to items in [-1, 1] with a binary label; the label follows every spatial
transform with nearest-neighbour interpolation and no intensity transform.
"""

from __future__ import annotations

import math

from monai.transforms import (
    Compose,
    Rand2DElasticd,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

KEYS = ("image", "label")


def classical(dims: int) -> Compose:
    """The classical augmentation of a 2D slice or 3D volume item.

    Spatial (image and label together): an affine (rotation up to 15 degrees in
    plane, 5 out of plane in 3D, scale +-15%, translation up to 4 voxels), then an
    elastic deformation. Intensity (image only): scale, shift and gamma on the
    [-1, 1] window, and Gaussian noise. Borders repeat the edge voxels, so no air
    frame appears in a body crop.
    """
    spatial_modes = ("bilinear", "nearest")
    angle = math.pi / 12
    elastic: Rand2DElasticd | Rand3DElasticd
    if dims == 2:
        affine = RandAffined(
            KEYS, prob=0.7, rotate_range=angle, scale_range=(0.15, 0.15),
            translate_range=(4, 4), mode=spatial_modes, padding_mode="border",
        )  # fmt: skip
        elastic = Rand2DElasticd(
            KEYS, spacing=(16, 16), magnitude_range=(0.5, 1.5), prob=0.3,
            mode=spatial_modes, padding_mode="border",
        )  # fmt: skip
    else:
        small = math.pi / 36
        affine = RandAffined(
            KEYS, prob=0.7, rotate_range=(small, small, angle), scale_range=(0.15,) * 3,
            translate_range=(4, 4, 2), mode=spatial_modes, padding_mode="border",
        )  # fmt: skip
        elastic = Rand3DElasticd(
            KEYS, sigma_range=(5.0, 7.0), magnitude_range=(20.0, 60.0), prob=0.2,
            mode=spatial_modes, padding_mode="border",
        )  # fmt: skip
    return Compose(
        [
            affine,
            elastic,
            RandScaleIntensityd("image", factors=0.1, prob=0.3),
            RandShiftIntensityd("image", offsets=0.1, prob=0.3),
            RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3, retain_stats=True),
            RandGaussianNoised("image", std=0.05, prob=0.3),
        ]
    )


__all__ = ["classical"]
