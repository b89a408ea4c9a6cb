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
    Randomizable,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

KEYS = ("image", "label")


class Untracked(Randomizable):
    """A MONAI transform run with metadata tracking off (``set_track_meta(False)``):
    the same draws and values as plain tensors, in about half the time on a CPU, since
    nothing downstream reads the affine history. The global setting is restored after
    each call, so other MONAI code in the process is unaffected. Seeding it seeds the
    wrapped transform (a ``Compose`` around it passes its seed on)."""

    def __init__(self, transform: Compose):
        self.transform = transform

    def randomize(self, data: object = None) -> None:
        """Nothing to draw here: the wrapped transforms draw their own."""

    def __call__(self, item: dict) -> dict:
        from monai.data import get_track_meta, set_track_meta

        before = get_track_meta()
        set_track_meta(False)
        try:
            return self.transform(item)
        finally:
            set_track_meta(before)

    def set_random_state(self, seed: int | None = None, state=None) -> Untracked:
        self.transform.set_random_state(seed, state)
        return self


def classical(dims: int) -> Untracked:
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
    return Untracked(
        Compose(
            [
                affine,
                elastic,
                RandScaleIntensityd("image", factors=0.1, prob=0.3),
                RandShiftIntensityd("image", offsets=0.1, prob=0.3),
                RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3, retain_stats=True),
                RandGaussianNoised("image", std=0.05, prob=0.3),
            ]
        )
    )


__all__ = ["Untracked", "classical"]
