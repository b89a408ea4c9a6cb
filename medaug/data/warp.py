"""Random spatial moves of masks, layouts and training pairs: one distribution.

Synthesis moves the masks of real training cases (``medaug.synth.masks.RealMasks``)
to make new layouts; a mask-conditioned generator that trained on unmoved layouts
only has never seen a moved one. So the generator's training pairs can be moved the
same way (``TrainConfig.warp``): :class:`WarpedPairs` moves image, label and context
together, each item by its own draw of :func:`draw_moves`, the draw ``RealMasks``
makes. Measured (``benchmarks/bench_moves.py``, ``bench_fidelity.py --judge-augment
classical``): label fidelity 0.656 with moved pairs against 0.598 without, and on moved
layouts as high as the real slices moved alike.

Everything is deterministic given the draw: :func:`warp` (a class map, nearest
neighbour) and :func:`warp_pair` (an item) apply recorded moves.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

#: The moves' ranges (``RealMasks``' defaults): rotation about x, y, z (degrees; 2D
#: turns in-plane only), size factor, shift as a share of the grid side, and an
#: elastic displacement (control points every 8 voxels, sd up to 2 voxels).
ROTATE_DEG = (5.0, 5.0, 15.0)
SCALE = (0.9, 1.1)
TRANSLATE_FRAC = 0.1
ELASTIC = (8.0, 2.0)


def draw_moves(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    rotate_deg: tuple[float, ...] = ROTATE_DEG,
    scale: tuple[float, float] = SCALE,
    translate_frac: float = TRANSLATE_FRAC,
    elastic: tuple[float, float] | None = ELASTIC,
) -> dict[str, Any]:
    """One random move of a grid of ``shape`` ((X, Y) or (X, Y, Z)): ``rotate_deg``,
    ``scale``, ``translate_vox`` and ``elastic`` (JSON-ready, six decimals)."""
    nd = len(shape)
    angles = (
        [rng.uniform(-rotate_deg[2], rotate_deg[2])]
        if nd == 2
        else [rng.uniform(-a, a) for a in rotate_deg]
    )
    moves: dict[str, Any] = {
        "rotate_deg": rounded(angles),
        "scale": rounded(rng.uniform(*scale, size=nd)),
        "translate_vox": rounded(
            rng.uniform(-translate_frac, translate_frac, size=nd) * np.array(shape)
        ),
        "elastic": None,
    }
    if elastic is not None:
        moves["elastic"] = {
            "spacing_vox": elastic[0],
            "magnitude_vox": rounded([rng.uniform(0.0, elastic[1])])[0],
            "seed": int(rng.integers(2**31)),
        }
    return moves


def rounded(values: Any) -> list[float]:
    # six decimals keep a manifest readable; the moves applied are the rounded values
    return [round(float(v), 6) for v in values]


def warp(
    array: np.ndarray,
    spacing_mm: tuple[float, ...],
    rotate_deg: list[float],
    scale: list[float],
    translate_vox: list[float],
    elastic: dict[str, Any] | None = None,
) -> np.ndarray:
    """A class map moved by an affine and an elastic displacement, nearest neighbour.

    The mask rotates about the grid centre by ``rotate_deg`` (2D: one in-plane angle;
    3D: angles about x, y, z, MONAI's ``create_rotate`` order), grows by ``scale`` per
    axis and moves by ``translate_vox``; this is worked out in millimetres, so
    anisotropic voxels do not shear it. ``elastic`` (``spacing_vox``,
    ``magnitude_vox``, ``seed``) adds a smooth displacement: normal offsets with
    standard deviation ``magnitude_vox`` on control points every ``spacing_vox``
    (voxels of the finest axis), interpolated to every voxel. Outside the source is 0.

    Args:
        array: ``(X, Y)`` or ``(X, Y, Z)`` integer class map.
        spacing_mm: the grid's voxel size (at least ``array.ndim`` values).

    Returns:
        uint8 array of ``array``'s shape, holding only values of ``array`` and 0.
    """
    points = sampling_points(array.shape, spacing_mm, rotate_deg, scale, translate_vox, elastic)
    moved = _resampled(torch.tensor(np.asarray(array), dtype=torch.uint8)[None], points)
    return moved[0].numpy().astype(np.uint8)


def _resampled(value: torch.Tensor, points: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """MONAI ``Resample`` of a channel-first tensor at ``points`` (outside: 0), as a
    plain float tensor (rounded when nearest). A MetaTensor would carry MONAI's
    per-operation bookkeeping into every layer of the model it is fed to."""
    from monai.transforms import Resample

    moved = Resample(mode=mode, padding_mode="zeros")(value.float(), points)
    plain = moved.as_tensor() if hasattr(moved, "as_tensor") else torch.as_tensor(moved)
    return plain.round() if mode == "nearest" else plain


def sampling_points(
    shape: tuple[int, ...],
    spacing_mm: tuple[float, ...],
    rotate_deg: list[float],
    scale: list[float],
    translate_vox: list[float],
    elastic: dict[str, Any] | None = None,
) -> torch.Tensor:
    """``(nd + 1, *shape)`` source coordinates of every output voxel (centred, for
    MONAI ``Resample``) of the move :func:`warp` makes."""
    from monai.transforms.utils import create_grid, create_rotate, create_scale, create_translate

    nd = len(shape)
    sp = np.asarray(spacing_mm[:nd], dtype=np.float64)
    angles = [math.radians(a) for a in rotate_deg]
    shift_mm = np.asarray(translate_vox, dtype=np.float64) * sp
    forward = (
        create_translate(nd, shift_mm.tolist())
        @ create_rotate(nd, angles[0] if nd == 2 else angles)
        @ create_scale(nd, list(scale))
    )
    to_mm = np.diag([*sp, 1.0])
    sample = np.linalg.inv(to_mm) @ np.linalg.inv(forward) @ to_mm
    grid = torch.as_tensor(create_grid(shape, backend="torch", dtype=torch.float64))
    points = (torch.from_numpy(sample) @ grid.reshape(nd + 1, -1)).reshape(grid.shape)
    if elastic is not None and elastic["magnitude_vox"] > 0:
        points[:nd] += _displacement(shape, sp, elastic)
    return points


def _displacement(shape: tuple[int, ...], sp: np.ndarray, elastic: dict[str, Any]) -> torch.Tensor:
    """``(nd, *shape)`` displacement in source voxels from the recorded seed."""
    nd = len(shape)
    unit = float(sp.min())  # elastic sizes are in voxels of the finest axis
    step_mm = float(elastic["spacing_vox"]) * unit
    control = [max(2, math.ceil((n - 1) * s / step_mm) + 1) for n, s in zip(shape, sp, strict=True)]
    rng = np.random.default_rng(int(elastic["seed"]))
    offsets_mm = rng.standard_normal((nd, *control)) * float(elastic["magnitude_vox"]) * unit
    offsets_vox = offsets_mm / sp.reshape(nd, *([1] * nd))
    field = torch.nn.functional.interpolate(
        torch.from_numpy(offsets_vox)[None],
        size=shape,
        mode="bicubic" if nd == 2 else "trilinear",
        align_corners=True,
    )
    return field[0]


def warp_pair(item: dict[str, Any], spacing_mm: tuple[float, ...], moves: dict[str, Any]):
    """A training item ``{"image": (C, *grid) in [-1, 1], "label": (1, *grid), "context":
    (1, *grid)?}`` moved by ``moves``: the image bilinearly (outside the source: -1, air
    at the window's floor), label and context by nearest neighbour (outside: 0, the
    background and "outside the body"). Other keys are kept."""
    image = torch.as_tensor(item["image"]).float()
    shape = tuple(image.shape[1:])
    args = [moves["rotate_deg"], moves["scale"], moves["translate_vox"], moves["elastic"]]
    points = sampling_points(shape, spacing_mm, *args)
    out = dict(item)
    out["image"] = _resampled(image + 1.0, points, "bilinear") - 1.0
    for key in ("label", "context"):
        if key in item:
            value = torch.as_tensor(item[key])
            out[key] = _resampled(value, points).to(value.dtype)
    return out


class WarpedPairs(Dataset):
    """Training items, each moved by its own draw: the generator learns the moved
    layouts synthesis asks it to render.

    Items are addressed by ``(index, step, position)`` keys (what a keyed
    :class:`~medaug.train.loop.StepBatches` yields): item ``index`` of ``data``, moved
    by the draw seeded with ``(seed, step, position)``, so a run is the same on one
    process or many, with any number of loader workers, and after a resume.
    """

    def __init__(self, data: Any, spacing_mm: tuple[float, ...], seed: int):
        self.data, self.spacing_mm, self.seed = data, tuple(spacing_mm), seed

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: int | tuple[int, int, int]) -> dict[str, Any]:
        if isinstance(key, int):  # an item as it is (the run's reals.png)
            return self.data[key]
        index, step, position = key
        item = self.data[index]
        rng = np.random.default_rng([self.seed, step, position])
        shape = tuple(torch.as_tensor(item["image"]).shape[1:])
        return warp_pair(item, self.spacing_mm, draw_moves(rng, shape))


__all__ = [
    "ELASTIC",
    "ROTATE_DEG",
    "SCALE",
    "TRANSLATE_FRAC",
    "WarpedPairs",
    "draw_moves",
    "rounded",
    "sampling_points",
    "warp",
    "warp_pair",
]
