"""The preprocessing steps: array functions, and MONAI-style transforms built on them.

Every step is a plain function on ``(X, Y, Z)`` numpy arrays with a RAS affine (the
fast path in :mod:`medaug.preprocess.pipeline` calls them directly), and a transform
in MONAI's two forms for pipeline authors: the array form takes a channel-first
``MetaTensor`` and the dictionary form (suffix ``d``) a dict of them, so they drop into
``monai.transforms.Compose`` next to ``LoadImaged`` and ``Orientationd``.

Units: HU for images before :class:`HUWindow`, [-1, 1] after it; millimetres for
spacing and margins; voxel indices ``(i, j, k)`` along ``(x, y, z)``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from medaug.io import geometry

Mode = Literal["linear", "bspline", "nearest"]

#: Value of voxels outside the scan after resampling: air.
AIR_HU = -1024.0


# ---------------------------------------------------------------------------------
# HU window


def hu_to_unit(hu: Any, window: tuple[float, float]) -> Any:
    """Clip HU to ``window`` and map it linearly to [-1, 1] (numpy or torch)."""
    low, high = window
    lib = torch if isinstance(hu, torch.Tensor) else np
    clipped = lib.clip(hu, low, high)
    return (clipped - low) * (2.0 / (high - low)) - 1.0


def unit_to_hu(x: Any, window: tuple[float, float]) -> Any:
    """The inverse of :func:`hu_to_unit` on [-1, 1] (values outside are clipped)."""
    low, high = window
    lib = torch if isinstance(x, torch.Tensor) else np
    return (lib.clip(x, -1.0, 1.0) + 1.0) * ((high - low) / 2.0) + low


# ---------------------------------------------------------------------------------
# Labels and boxes


def map_labels(label: np.ndarray, classes: Sequence[Sequence[int]]) -> np.ndarray:
    """Source label values -> class map 0..K (class k collects ``classes[k-1]``)."""
    lut = np.zeros(256, dtype=np.uint8)
    for k, values in enumerate(classes, start=1):
        lut[list(values)] = k
    top = int(label.max()) if label.size else 0
    if np.array_equal(lut[: top + 1], np.arange(top + 1)):
        return label  # already a class map (TCIA: 0 and 1): no 50 MB copy
    return lut[label]


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Inclusive voxel box ``(lo, hi)`` of a 3D mask, or None when it is empty.

    Projects the mask on each axis instead of listing its voxels, so a 512^2 x 200
    mask takes a few tens of milliseconds.
    """
    lo, hi = [], []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        lo.append(hits[0])
        hi.append(hits[-1])
    return np.array(lo), np.array(hi)


def body_box(
    image: np.ndarray, threshold_hu: float, step: int = 4
) -> tuple[np.ndarray, np.ndarray] | None:
    """Voxel box of the body: the largest connected region above ``threshold_hu``.

    The largest component (found on a grid thinned by ``step``) drops the table and
    blankets that touch the body only through air.
    """
    from scipy import ndimage

    coarse = image[::step, ::step, ::step] > threshold_hu
    components, n = ndimage.label(coarse)
    if n == 0:
        return None
    sizes = np.bincount(components.ravel())[1:]
    box = bounding_box(components == (int(np.argmax(sizes)) + 1))
    if box is None:
        return None
    # the coarse box is exact only to `step` voxels: refine it at full resolution
    # inside the coarse box grown by one step on every side
    shape = np.array(image.shape)
    lo = np.maximum(box[0] * step - step, 0)
    hi = np.minimum(box[1] * step + step, shape - 1)
    window = image[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] > threshold_hu
    fine = bounding_box(window)
    assert fine is not None  # the coarse component's voxels lie inside the window
    return lo + fine[0], lo + fine[1]


# ---------------------------------------------------------------------------------
# Output grid and resampling


@dataclass(frozen=True)
class Grid:
    """A RAS-aligned voxel grid: ``shape`` voxels with ``affine`` (voxel -> RAS mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray


def world_box(affine: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RAS min and max (mm) of the voxel centres in the inclusive box ``lo..hi``."""
    corners = np.array(
        [[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])]
    )
    world = (np.asarray(affine) @ corners.T).T[:, :3]
    return world.min(axis=0), world.max(axis=0)


def grid_around(
    low_mm: np.ndarray,
    high_mm: np.ndarray,
    spacing_mm: Sequence[float],
    size: Sequence[int | None] = (None, None, None),
) -> Grid:
    """A RAS-aligned grid centred on the box ``low_mm..high_mm``.

    Args:
        low_mm, high_mm: RAS corners of the box, mm.
        spacing_mm: voxel size along x, y, z.
        size: voxels per axis; ``None`` covers the box along that axis.
    """
    s = np.asarray(spacing_mm, dtype=np.float64)
    centre = (np.asarray(low_mm) + np.asarray(high_mm)) / 2.0
    extent = np.asarray(high_mm) - np.asarray(low_mm)
    shape = tuple(
        int(n) if n is not None else math.ceil(extent[a] / s[a] - 1e-6) + 1
        for a, n in enumerate(size)
    )
    affine = np.diag([*s, 1.0])
    affine[:3, 3] = centre - (np.array(shape) - 1) / 2.0 * s
    return Grid((shape[0], shape[1], shape[2]), affine)


def spacing_grid(affine: np.ndarray, shape: Sequence[int], spacing_mm: Sequence[float]) -> Grid:
    """The grid MONAI's ``Spacing`` would produce: the same first voxel centre and
    direction, new spacing, and enough voxels to cover the old field."""
    affine = np.asarray(affine, dtype=np.float64)
    old = np.array(geometry.spacing(affine))
    new = np.asarray(spacing_mm, dtype=np.float64)
    out_shape = np.maximum(np.round(np.asarray(shape) * old / new), 1).astype(int)
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] / old * new
    return Grid((int(out_shape[0]), int(out_shape[1]), int(out_shape[2])), out)


def coverage(affine: np.ndarray, shape: Sequence[int], grid: Grid) -> np.ndarray:
    """Fraction of the grid's extent along x, y, z that the scan covers."""
    s_lo, s_hi = world_box(affine, np.array([-0.5] * 3), np.array(shape) - 0.5)
    g_lo, g_hi = world_box(grid.affine, np.array([-0.5] * 3), np.array(grid.shape) - 0.5)
    overlap = np.clip(np.minimum(s_hi, g_hi) - np.maximum(s_lo, g_lo), 0, None)
    return overlap / (g_hi - g_lo)


def _sheared(affine: np.ndarray) -> bool:
    m = np.asarray(affine)[:3, :3]
    n = m / np.linalg.norm(m, axis=0)
    return bool(np.abs(n.T @ n - np.eye(3)).max() > 1e-4)


def resample(
    array: np.ndarray,
    affine: np.ndarray,
    grid: Grid,
    mode: Mode = "linear",
    fill: float = AIR_HU,
) -> np.ndarray:
    """Resample an ``(X, Y, Z)`` array onto ``grid`` (any orientation, any spacing).

    Only the part of the source that the grid touches is handed to the resampler, so
    cropping costs nothing and a 64^3 crop of a 512^2 x 200 scan takes milliseconds.
    SimpleITK's multi-threaded ``Resample`` does the work; a sheared source (gantry
    tilt), which ITK cannot represent, goes through ``scipy.ndimage.affine_transform``.

    Args:
        array: (X, Y, Z) source values (HU or a label map).
        affine: its RAS affine.
        grid: the output grid.
        mode: ``linear``, ``bspline`` (cubic) or ``nearest`` (labels).
        fill: value outside the source.

    Returns:
        (X, Y, Z) float32 array (uint8 for ``nearest`` on a uint8 source) on ``grid``.
    """
    affine = np.asarray(affine, dtype=np.float64)
    out_dtype = array.dtype if mode == "nearest" else np.dtype(np.float32)
    # source voxel coordinates of the output grid's corners -> the window to read
    to_source = np.linalg.inv(affine) @ grid.affine
    corners = (to_source @ geometry.corner_indices(grid.shape).T).T[:, :3]
    pad = {"nearest": 1, "linear": 1, "bspline": 3}[mode]
    lo = np.maximum(np.floor(corners.min(axis=0)).astype(int) - pad, 0)
    hi = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + pad, np.array(array.shape) - 1)
    if np.any(hi < lo):
        return np.full(grid.shape, fill, dtype=out_dtype)
    window = array[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
    shift = np.eye(4)
    shift[:3, 3] = lo
    return _interpolate(window, affine @ shift, grid, mode, fill, out_dtype)


def _interpolate(
    window: np.ndarray,
    affine: np.ndarray,
    grid: Grid,
    mode: Mode,
    fill: float,
    out_dtype: np.dtype,
) -> np.ndarray:
    """Values of ``window`` (with ``affine``) at the voxel centres of ``grid``."""
    if _sheared(affine):
        from scipy import ndimage

        m = np.linalg.inv(affine) @ grid.affine
        order = {"nearest": 0, "linear": 1, "bspline": 3}[mode]
        out = ndimage.affine_transform(
            window.astype(np.float32, copy=False),
            m[:3, :3],
            offset=m[:3, 3],
            output_shape=grid.shape,
            order=order,
            mode="constant",
            cval=fill,
            prefilter=order > 1,
        )
        return out.astype(out_dtype, copy=False)

    import SimpleITK as sitk

    if mode != "nearest":
        window = window.astype(np.float32, copy=False)
    reference = geometry.to_sitk(np.zeros((1, 1, 1), dtype=np.uint8), grid.affine)
    interpolator = {
        "nearest": sitk.sitkNearestNeighbor,
        "linear": sitk.sitkLinear,
        "bspline": sitk.sitkBSpline,
    }[mode]
    out = sitk.Resample(
        geometry.to_sitk(window, affine),
        list(grid.shape),
        sitk.Transform(),
        interpolator,
        reference.GetOrigin(),
        reference.GetSpacing(),
        reference.GetDirection(),
        fill,
        sitk.sitkUInt8 if out_dtype == np.uint8 else sitk.sitkFloat32,
    )
    # (Z, Y, X) C-order from ITK is (X, Y, Z) x-fastest: a view, no copy
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0).astype(out_dtype, copy=False)


# ---------------------------------------------------------------------------------
# MONAI-style transforms


def _meta(image: Any) -> tuple[np.ndarray, np.ndarray]:
    """(C, X, Y, Z) numpy array and RAS affine of a MetaTensor (or array + eye)."""
    if isinstance(image, MetaTensor):
        return image.detach().cpu().numpy(), image.affine.detach().cpu().numpy().astype(np.float64)
    return np.asarray(image), np.eye(4)


def _wrap(data: np.ndarray, affine: np.ndarray, like: Any) -> MetaTensor:
    out = MetaTensor(torch.from_numpy(np.ascontiguousarray(data)), affine=torch.as_tensor(affine))
    if isinstance(like, MetaTensor):
        for key, value in like.meta.items():
            if key not in ("affine", "original_affine", "spatial_shape"):
                out.meta[key] = value
    out.meta["spatial_shape"] = np.array(data.shape[1:])
    return out


class ResampleToSpacing(Transform):
    """Resample a channel-first ``(C, X, Y, Z)`` MetaTensor to a voxel size in mm.

    Keeps the first voxel centre and the direction, like ``monai.transforms.Spacing``,
    but runs SimpleITK's multi-threaded resampler (B-spline included).

    Args:
        spacing_mm: target (x, y, z) voxel size.
        mode: ``linear``, ``bspline`` or ``nearest``.
        fill: value outside the source (air for images, 0 for labels).
    """

    def __init__(self, spacing_mm: Sequence[float], mode: Mode = "linear", fill: float = AIR_HU):
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.mode = mode
        self.fill = fill

    def __call__(self, img: Any) -> MetaTensor:
        data, affine = _meta(img)
        grid = spacing_grid(affine, data.shape[1:], self.spacing_mm)
        out = np.stack([resample(c, affine, grid, self.mode, self.fill) for c in data])
        return _wrap(out, grid.affine, img)


class ResampleToSpacingd(MapTransform):
    """Dictionary form of :class:`ResampleToSpacing`, one mode and fill per key."""

    def __init__(
        self,
        keys: KeysCollection,
        spacing_mm: Sequence[float],
        mode: Mode | Sequence[Mode] = ("linear", "nearest"),
        fill: float | Sequence[float] = (AIR_HU, 0.0),
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        modes = [mode] * len(self.keys) if isinstance(mode, str) else list(mode)
        fills = [fill] * len(self.keys) if isinstance(fill, int | float) else list(fill)
        self.resamplers = [
            ResampleToSpacing(spacing_mm, m, f) for m, f in zip(modes, fills, strict=True)
        ]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, resampler in zip(self.key_iterator(d), self.resamplers, strict=False):
            d[key] = resampler(d[key])
        return d


class HUWindow(Transform):
    """Clip HU to a window and map it to [-1, 1]; :meth:`inverse` maps back to HU.

    Equal to ``monai.transforms.ScaleIntensityRange(low, high, -1, 1, clip=True)``,
    with the inverse that synthesis needs.
    """

    def __init__(self, window: Sequence[float]):
        self.window = (float(window[0]), float(window[1]))

    def __call__(self, img: Any) -> Any:
        return hu_to_unit(img, self.window)

    def inverse(self, x: Any) -> Any:
        return unit_to_hu(x, self.window)


class HUWindowd(MapTransform):
    """Dictionary form of :class:`HUWindow` (apply it to image keys only)."""

    def __init__(
        self, keys: KeysCollection, window: Sequence[float], allow_missing_keys: bool = False
    ):
        super().__init__(keys, allow_missing_keys)
        self.window = HUWindow(window)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window(d[key])
        return d


class CropAroundd(MapTransform):
    """Crop (and pad) every key to a grid centred on a structure's box.

    The structure is ``label_key == value`` (the target), or the body (``value=None``:
    the largest region of ``image_key`` above ``body_threshold_hu``). ``margin_mm`` is
    added on every side; axes whose ``size`` is None keep the box plus margin, the
    others get exactly ``size`` voxels, padded with ``fill`` where the scan ends.

    Args:
        keys: the keys to crop (image and label).
        label_key: where the target is looked up.
        value: the target's class value, or None for a body crop.
        margin_mm: margin around the box, mm.
        size: output voxels per axis (None: the box's size).
        fill: pad value per key (air / -1 for images, 0 for labels).
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        value: int | None = 1,
        margin_mm: float = 20.0,
        size: Sequence[int | None] = (None, None, None),
        fill: float | Sequence[float] = (-1.0, 0.0),
        image_key: str = "image",
        body_threshold_hu: float = -500.0,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.label_key, self.image_key = label_key, image_key
        self.value, self.margin_mm = value, float(margin_mm)
        self.size = tuple(size)
        self.fills = [fill] * len(self.keys) if isinstance(fill, int | float) else list(fill)
        self.body_threshold_hu = body_threshold_hu

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.value is None:
            source, affine = _meta(d[self.image_key])
            box = body_box(source[0], self.body_threshold_hu)
        else:
            source, affine = _meta(d[self.label_key])
            box = bounding_box(source[0] == self.value)
        if box is None:
            raise ValueError(f"CropAroundd: no voxels of {self.value!r} in {self.label_key!r}")
        spacing = np.array(geometry.spacing(affine))
        margin = np.ceil(self.margin_mm / spacing - 1e-6).astype(int)
        shape = np.array(source.shape[1:])
        # axes without a size keep box + margin, inside the scan
        start = np.maximum(box[0] - margin, 0)
        stop = np.minimum(box[1] + margin, shape - 1) + 1
        for a, n in enumerate(self.size):
            if n is not None:  # centre n voxels on the box
                start[a] = int(np.floor((box[0][a] + box[1][a] + 1 - n) / 2.0))
                stop[a] = start[a] + n
        shift = np.eye(4)
        shift[:3, 3] = start
        for key, fill in zip(self.key_iterator(d), self.fills, strict=False):
            data_k, affine_k = _meta(d[key])
            d[key] = _wrap(_take(data_k, start, stop, fill), affine_k @ shift, d[key])
        return d


class MapLabelsd(MapTransform):
    """Source label values -> class map 0..K (``PreprocessConfig.labels``' order)."""

    def __init__(
        self,
        keys: KeysCollection,
        classes: Mapping[str, Sequence[int]],
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.classes = [list(v) for v in classes.values()]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            values, affine = _meta(d[key])
            d[key] = _wrap(map_labels(values.astype(np.uint8), self.classes), affine, d[key])
        return d


def dictionary_chain(config: Any, image_key: str = "image", label_key: str = "label") -> list:
    """The preprocessing steps of ``config`` as MONAI dictionary transforms.

    Put them after ``LoadImaged`` + ``EnsureChannelFirstd`` in a ``Compose``. They give
    the geometry of :func:`medaug.preprocess.preprocess_scan` (within one voxel: the
    crop is aligned to the resampled grid here, to world millimetres there), in more
    passes over the data; medaug's own pipeline uses the one-pass fast path.

    Args:
        config: a :class:`~medaug.preprocess.PreprocessConfig`.
    """
    from monai.transforms import Orientationd

    keys = [image_key, label_key]
    size: tuple[int | None, ...] = config.grid or (None, None, None)
    if config.dims == 2:
        size = (*size[:2], None)
    crop_value = None if config.crop == "body" else config.target_class
    steps: list = [
        Orientationd(keys, axcodes="RAS", labels=None),
        ResampleToSpacingd(keys, config.spacing_mm, (config.image_interpolation, "nearest")),
        MapLabelsd(label_key, config.labels),
    ]
    if config.crop != "none":
        steps.append(
            CropAroundd(
                keys,
                label_key=label_key,
                value=crop_value,
                margin_mm=config.margin_mm,
                size=size,
                fill=(AIR_HU, 0.0),
                image_key=image_key,
                body_threshold_hu=config.body_threshold_hu,
            )
        )
    steps.append(HUWindowd(image_key, config.hu_window))
    return steps


def _take(data: np.ndarray, start: np.ndarray, stop: np.ndarray, fill: float) -> np.ndarray:
    """``data[:, start:stop]`` per spatial axis, padded with ``fill`` outside."""
    shape = data.shape[1:]
    out = np.full((data.shape[0], *(stop - start)), fill, dtype=data.dtype)
    src = tuple(slice(max(s, 0), min(e, n)) for s, e, n in zip(start, stop, shape, strict=True))
    dst = tuple(
        slice(max(s, 0) - s, max(s, 0) - s + (sl.stop - sl.start))
        for s, sl in zip(start, src, strict=True)
    )
    if all(sl.stop > sl.start for sl in src):
        out[(slice(None), *dst)] = data[(slice(None), *src)]
    return out
