"""Masks for a mask-conditioned generator: the layouts it renders images around.

Two sources live here (a third, a learned mask generator, is a model):

- :class:`RealMasks` (``real``): the layout of one of the generator's training cases
  (a slice holding target voxels in 2D, the volume in 3D) under a random affine and
  elastic transform. The layout (``layout.compose`` of label and context) moves as one
  class map, so target and context stay together.
- :class:`UserMasks` (``PATH``): the user's own NIfTI label maps, checked and put onto
  the model grid as preprocessing would put the scans they belong to.

Both split drawing from applying, as :class:`~medaug.synth.sampler.Synthesizer` does:
``plan(index, seed)`` draws everything random about mask ``index`` from
``np.random.default_rng([seed, index, 1])`` (the trailing 1 keeps these draws apart
from the latent draws, which use ``[seed, index]``) into a JSON-able dict for the
manifest, and ``make(params)`` applies it deterministically, so ``make(plan(i, s))``
is the same array every time.

Shapes: cache arrays are ``(Z, X, Y)``; masks come out as ``(X, Y)`` slices for 2D
models and ``(X, Y, Z)`` volumes for 3D models, uint8 classes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medaug.data.warp import ELASTIC, ROTATE_DEG, SCALE, TRANSLATE_FRAC, draw_moves, warp
from medaug.errors import ConfigError, InputError
from medaug.io.nifti import is_nifti, nifti_stem
from medaug.io.scan import Scan
from medaug.preprocess import layout
from medaug.preprocess import transforms as T
from medaug.preprocess.cache import Cache, case_number
from medaug.preprocess.config import PreprocessConfig
from medaug.preprocess.pipeline import plan_grid

#: Redraws of a real mask whose transform left no target voxel, before giving up.
REDRAWS = 10
#: The largest share of the target a kept transform may cut off at the grid's edge
#: (estimated: target voxels after against before, times the drawn scale's area).
MAX_CUT = 0.25
#: Unknown label values listed in an error message, at most.
LISTED_VALUES = 8

#: ``(case_id, kind) -> (Z, X, Y) array`` for ``kind`` ``label`` or ``context``.
ArrayReader = Callable[[str, str], np.ndarray]


# ---------------------------------------------------------------------------------
# The deterministic transform


# ---------------------------------------------------------------------------------
# real: training cases' layouts under random transforms


class RealMasks:
    """Layouts of the generator's training cases under random affine + elastic motion.

    Args:
        cache: the cache the generator trained on (its config's ``dims`` must be
            ``dims``).
        cases: the case ids masks are drawn from (the generator's training cases); a
            case without target voxels is left out.
        channels: the layout (``target``, ``target+body``, ``target+body+tissue``);
            the context map is read only when it needs one.
        dims: 2 (one ``(X, Y)`` slice per mask) or 3 (an ``(X, Y, Z)`` volume).
        rotate_deg: largest rotation about x, y and z, degrees (uniform in
            ``±rotate_deg``); a 2D mask turns in-plane only (the z value).
        scale: range of the size factor per axis (uniform).
        translate_frac: largest shift per axis as a fraction of the grid side (uniform
            in ±; 2D moves in-plane only).
        elastic: ``(spacing_vox, magnitude_vox)``: control points every
            ``spacing_vox`` voxels, their offsets normal with a standard deviation
            drawn uniformly from ``[0, magnitude_vox]`` voxels; None for none.
        read: ``(case_id, kind) -> (Z, X, Y)`` array for ``kind`` ``label`` or
            ``context`` (default: ``cache.array``); tests feed their own.

    Example:
        >>> masks = RealMasks(cache, train_cases, "target", 2)      # doctest: +SKIP
        >>> params = masks.plan(0, seed=0)                            # doctest: +SKIP
        >>> masks.make(params).shape                                   # doctest: +SKIP
        (64, 64)
    """

    def __init__(
        self,
        cache: Cache,
        cases: list[str],
        channels: str,
        dims: int,
        *,
        rotate_deg: tuple[float, float, float] = ROTATE_DEG,
        scale: tuple[float, float] = SCALE,
        translate_frac: float = TRANSLATE_FRAC,
        elastic: tuple[float, float] | None = ELASTIC,
        read: ArrayReader | None = None,
    ):
        if dims not in (2, 3):
            raise ConfigError(f"dims must be 2 or 3, got {dims!r}")
        if dims != cache.config.dims:
            raise ConfigError(f"{cache.root}: a {cache.config.dims}D cache, not {dims}D masks")
        unknown = [c for c in cases if c not in cache.records]
        if unknown:
            raise ConfigError(f"{cache.root}: no case {', '.join(unknown)} in this cache")
        self.cache = cache
        self.channels = layout.check_channels(channels)
        self.dims = dims
        self.rotate_deg = tuple(float(a) for a in rotate_deg)
        self.scale = (float(scale[0]), float(scale[1]))
        self.translate_frac = float(translate_frac)
        self.elastic = None if elastic is None else (float(elastic[0]), float(elastic[1]))
        if len(self.rotate_deg) != 3 or not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(
                f"rotate_deg must be 3 angles and scale (low, high) with 0 < low <= high, "
                f"got {list(rotate_deg)} and {list(scale)}"
            )
        self.read: ArrayReader = read or cache.array
        self.cases = [c for c in cases if cache.records[c]["target_slices"]]
        if not self.cases:
            raise ConfigError(f"{cache.root}: none of the {len(cases)} cases has target voxels")
        self._by_number = {case_number(c): c for c in self.cases}
        self._last: tuple[str, np.ndarray] | None = None

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return self.cache.config.spacing_mm

    def plan(self, index: int, seed: int, slices: int | None = None) -> dict[str, Any]:
        """How mask ``index`` is made; a plain dict for the manifest.

        ``slices`` (2D only) asks for a stack: that many consecutive slices of one
        training case, centred on its target and cut to the case's depth, under one
        shared transform (``make`` returns ``(X, Y, S)``), so a 2D model can render a
        volume slice by slice.

        A draw is drawn again from ``[seed, index, 1, attempt]`` when its transform
        leaves no voxel of the target class (``config.target``), or pushes the target
        against the grid's edge (a sliver of organ cut by the border is a poor
        training pair); ``attempt`` and, for a redrawn mask, the reasons of the draws
        refused are recorded. A source whose target touches the edge already (cut by
        preprocessing's crop) may touch it still, if no more than :data:`MAX_CUT` of
        it is cut off.

        Raises:
            ConfigError: no acceptable draw in ``REDRAWS + 1`` draws.
        """
        refused: list[str] = []
        for attempt in range(REDRAWS + 1):
            key = [seed, index, 1] if attempt == 0 else [seed, index, 1, attempt]
            params = self._draw(np.random.default_rng(key), attempt, slices)
            why = self._refusal(params)
            if why is None:
                if refused:
                    params["refused"] = refused
                return params
            refused.append(why)
        raise ConfigError(
            f"mask {index} (seed {seed}): no draw kept the target whole inside the grid in "
            f"{REDRAWS + 1} draws ({', '.join(sorted(set(refused)))}); use smaller "
            "rotate_deg, scale, translate_frac or elastic"
        )

    def _refusal(self, params: dict[str, Any]) -> str | None:
        """Why a draw is refused ("empty", "at the edge"), or None when it is kept:
        the target pushed against the edge when its source was clear of it, or more
        than :data:`MAX_CUT` of it cut off."""
        target = layout.target_of(self.make(params), self.channels) == self.target_class
        if not target.any():
            return "empty"
        if _at_edge(target):
            source = self._source_of(params)
            before = layout.target_of(source, self.channels) == self.target_class
            expected = before.sum() * math.prod(params["scale"])
            if not _at_edge(before) or target.sum() < (1.0 - MAX_CUT) * expected:
                return "at the edge"
        return None

    @property
    def target_class(self) -> int:
        return self.cache.config.target_class

    def _draw(
        self, rng: np.random.Generator, attempt: int, slices: int | None = None
    ) -> dict[str, Any]:
        case = self.cases[int(rng.integers(len(self.cases)))]
        rec = self.cache.records[case]
        params: dict[str, Any] = {"masks": "real", "source": case_number(case)}
        shape = [int(n) for n in rec["shape"]]  # (X, Y, Z)
        if self.dims == 2 and slices is not None:  # a stack around the target's middle
            on = rec["target_slices"]
            count = min(int(slices), shape[2])
            first = int(np.clip(on[len(on) // 2] - count // 2, 0, shape[2] - count))
            params["slices"] = [first, count]
            shape = shape[:2]
        elif self.dims == 2:
            on = rec["target_slices"]
            params["slice"] = int(on[int(rng.integers(len(on)))])
            shape = shape[:2]
        params |= draw_moves(
            rng, tuple(shape), self.rotate_deg, self.scale, self.translate_frac, self.elastic
        )
        params["attempt"] = attempt
        return params

    def make(self, params: dict[str, Any]) -> np.ndarray:
        """The layout of ``params``: uint8 ``(X, Y)`` (2D) or ``(X, Y, Z)`` (3D)."""
        key = json.dumps(params, sort_keys=True)
        if self._last is not None and self._last[0] == key:
            return self._last[1].copy()
        if params.get("masks") != "real" or params.get("source") not in self._by_number:
            raise ConfigError(f"not a plan of these real masks: {key}")
        moves = [params["rotate_deg"], params["scale"], params["translate_vox"], params["elastic"]]
        source = self._source_of(params)
        if "slices" in params:  # one transform for every slice of the stack
            out = np.stack([warp(source[..., k], self.spacing_mm, *moves)
                            for k in range(source.shape[-1])], axis=-1)  # fmt: skip
        else:
            out = warp(source, self.spacing_mm, *moves)
        self._last = (key, out)
        return out.copy()

    def _source_of(self, params: dict[str, Any]) -> np.ndarray:
        """The untransformed layout a plan starts from: a slice, a stack or a volume."""
        case_id = self._by_number[params["source"]]
        if "slices" in params:
            first, count = params["slices"]
            return np.stack([self.source(case_id, z) for z in range(first, first + count)], -1)
        return self.source(case_id, params.get("slice"))

    def source(self, case_id: str, z: int | None = None) -> np.ndarray:
        """A case's untransformed layout: slice ``z`` ``(X, Y)`` or the volume
        ``(X, Y, Z)``."""
        label = self.read(case_id, "label")  # (Z, X, Y)
        context = None
        if layout.context_offset(self.channels) > 0:
            context = self.read(case_id, "context")
        if z is not None:
            label = label[z]
            context = None if context is None else context[z]
        else:
            label = np.moveaxis(label, 0, -1)
            context = None if context is None else np.moveaxis(context, 0, -1)
        label = np.asarray(label, dtype=np.uint8)
        context = None if context is None else np.asarray(context, dtype=np.uint8)
        return np.ascontiguousarray(layout.compose(label, context, self.channels))


def _at_edge(target: np.ndarray) -> bool:
    """Whether a boolean map has a voxel on its in-plane outer faces (x or y)."""
    for axis in range(min(target.ndim, 2)):  # 3D: z is the case's own extent, not a cut
        if target.take(0, axis=axis).any() or target.take(-1, axis=axis).any():
            return True
    return False


# ---------------------------------------------------------------------------------
# PATH: the user's own label maps


class UserMasks:
    """The user's NIfTI label maps, on the model grid.

    Each map is read with its affine and resampled (nearest neighbour) onto the grid
    preprocessing would give the scan it belongs to: ``config.spacing_mm``, size
    ``config.grid_2d`` / ``grid_3d``, centred on the target's box for
    ``crop="target"`` (``pipeline.plan_grid`` on the label alone; a 2D model's z
    range covers the target slices and the margin, inside the map). A label map has
    no image, so ``crop="body"`` is approximated by the map's whole field (its
    scan's, which the body mostly fills), as ``crop="none"`` uses it. A one-slice
    map for a 2D model takes ``spacing_mm[2]`` as its thickness.

    Args:
        path: one ``.nii`` / ``.nii.gz`` file, or a folder of them. In a folder,
            hidden entries (``.DS_Store``, ``._x.nii.gz``) are skipped; any other
            entry that is not a NIfTI file, subfolders included, is an error.
        config: the generator's preprocessing config (labels, target, grid).
        dims: 2 or 3, the generator's.

    Raises:
        InputError: one line naming the file: not a NIfTI label map, non-integer
            values, values the model does not know, no target voxels, a 2D map for
            a 3D model, the target lost on the grid, an empty folder.

    Example:
        >>> masks = UserMasks("my_labels/", checkpoint.preprocess, 2)  # doctest: +SKIP
        >>> masks.names, masks.slices(0)[:3]                            # doctest: +SKIP
        (['case_a', 'case_b'], [12, 13, 14])
    """

    def __init__(self, path: str | os.PathLike[str], config: PreprocessConfig, dims: int):
        if dims not in (2, 3):
            raise ConfigError(f"dims must be 2 or 3, got {dims!r}")
        self.path = Path(path)
        self.dims = dims
        self.config = replace(config, dims=2 if dims == 2 else 3)
        files = _map_files(self.path)
        #: file stems, in the order of the maps
        self.names: list[str] = [nifti_stem(f) for f in files]
        #: what was accepted on the way, ``file: warning``
        self.warnings: list[str] = []
        self._maps: list[np.ndarray] = []
        self._slices: list[list[int]] = []
        for f in files:
            classes, warnings = _on_grid(f, self.config)
            classes.flags.writeable = False
            self._maps.append(classes)
            on = (classes == self.config.target_class).any(axis=(0, 1))
            self._slices.append(np.flatnonzero(on).tolist())
            self.warnings += [f"{f}: {w}" for w in warnings]

    @classmethod
    def from_arrays(cls, arrays: list[Any], config: PreprocessConfig, dims: int) -> UserMasks:
        """Label class maps already on the model grid, in memory (``Synthesizer.sample(n,
        masks=[...])``): ``(X, Y)`` slices for a 2D model, ``(X, Y, Z)`` volumes for a
        3D one, classes 0..K as the model's labels number them."""
        self = cls.__new__(cls)
        self.path, self.dims, self.config = Path("<arrays>"), dims, config
        grid = tuple(config.grid_2d or ()) if dims == 2 else tuple(config.grid_3d or ())
        self.names, self.warnings, self._maps, self._slices = [], [], [], []
        for k, a in enumerate(arrays):
            a = np.asarray(a.cpu() if hasattr(a, "cpu") else a)
            if dims == 2 and a.ndim == 2:
                a = a[:, :, None]
            where = Path(f"masks[{k}]")
            if a.shape[:2] != grid[:2] or (dims == 3 and a.shape != grid):
                raise InputError(where, f"shape {a.shape} is not the model grid {grid}")
            if a.min() < 0 or a.max() > len(config.labels) or not np.all(a == np.round(a)):
                raise InputError(where, f"classes must be integers 0..{len(config.labels)}")
            a = a.astype(np.uint8)
            on = (a == config.target_class).any(axis=(0, 1))
            if not on.any():
                raise InputError(where, f"no {config.target} voxels")
            a.flags.writeable = False
            self._maps.append(a)
            self._slices.append(np.flatnonzero(on).tolist())
            self.names.append(f"map_{k}")
        if not self._maps:
            raise ConfigError("{masks}: an empty list of label maps")
        return self

    def __len__(self) -> int:
        return len(self._maps)

    def class_map(self, k: int) -> np.ndarray:
        """Map ``k`` on the model grid: uint8 ``(X, Y, Z)`` classes (read-only)."""
        return self._maps[k]

    def slices(self, k: int) -> list[int]:
        """The grid slices of map ``k`` that hold target voxels (what a 2D model takes)."""
        return self._slices[k]

    def plan(self, index: int, seed: int) -> dict[str, Any]:
        """Which map mask ``index`` is (``index % len(self)``) and, in 2D, which slice."""
        rng = np.random.default_rng([seed, index, 1])
        k = index % len(self)
        params: dict[str, Any] = {"masks": "user", "map": k, "name": self.names[k]}
        if self.dims == 2:
            on = self._slices[k]
            params["slice"] = int(on[int(rng.integers(len(on)))])
        return params

    def make(self, params: dict[str, Any]) -> np.ndarray:
        """The label class map of ``params``: uint8 ``(X, Y)`` (2D) or ``(X, Y, Z)``."""
        if params.get("masks") != "user" or not 0 <= params.get("map", -1) < len(self):
            raise ConfigError(f"not a plan of these user masks: {json.dumps(params)}")
        classes = self._maps[params["map"]]
        if self.dims == 2:
            return np.ascontiguousarray(classes[:, :, params["slice"]])
        return classes.copy()


def _map_files(path: Path) -> list[Path]:
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_file():
        if not is_nifti(path):
            raise InputError(path, "not a NIfTI label map; {masks} takes .nii/.nii.gz files")
        return [path]
    files = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            raise InputError(
                entry, "a folder; {masks} reads the .nii/.nii.gz files directly inside"
            )
        if not is_nifti(entry):
            raise InputError(entry, "not a NIfTI label map; {masks} takes .nii/.nii.gz files")
        files.append(entry)
    if not files:
        raise InputError(path, "no .nii/.nii.gz label maps in this folder")
    return files


def _read_map(path: Path, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """(source values ``(X, Y, Z)``, RAS affine) of one label map, checked."""
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises ImageFileError, HeaderDataError, ValueError, ...
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise InputError(
            path, f"not a readable NIfTI label map ({type(exc).__name__}: {first})"
        ) from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(path, f"not a NIfTI label map ({type(img).__name__})")
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) not in (2, 3):
        raise InputError(path, f"expected a 3D label map (or a 2D slice), found shape {shape}")
    if (len(shape) == 2 or shape[2] == 1) and config.dims == 3:
        raise InputError(path, "a 2D map (one slice) cannot condition a 3D model; give a volume")
    try:
        data = np.asanyarray(img.dataobj).reshape(*shape[:2], -1)
    except Exception as exc:  # truncated or corrupt data: EOFError, zlib.error, ...
        raise InputError(path, f"truncated or corrupt label data ({type(exc).__name__})") from None
    affine = np.array(img.affine, dtype=np.float64)
    if data.shape[2] == 1:  # one slice: its thickness is the model's
        column = affine[:3, 2]
        if np.linalg.norm(column) < 1e-9:
            column = np.cross(affine[:3, 0], affine[:3, 1])
        affine[:3, 2] = column / np.linalg.norm(column) * config.spacing_mm[2]
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(path, "header holds no usable voxel-to-world affine")
    if data.dtype.kind not in "iub":
        bad = data[~np.isfinite(data) | (data != np.round(data))] if data.dtype.kind == "f" else []
        if data.dtype.kind != "f" or len(bad):
            example = f" (e.g. {bad[0]:g})" if len(bad) else ""
            raise InputError(path, f"non-integer voxel values{example}: not a label map")
    values = np.unique(data).astype(np.int64)
    known = {0, *(v for vs in config.labels.values() for v in vs)}
    unknown = [int(v) for v in values if int(v) not in known]
    if unknown:
        listed = ", ".join(map(str, unknown[:LISTED_VALUES]))
        more = f" and {len(unknown) - LISTED_VALUES} more" if len(unknown) > LISTED_VALUES else ""
        names = "; ".join(f"{', '.join(map(str, vs))} {name}" for name, vs in config.labels.items())
        raise InputError(
            path,
            f"label values {listed}{more} are not classes of this model "
            f"(known: 0 background; {names})",
        )
    return data.astype(np.uint8), affine


def _on_grid(path: Path, config: PreprocessConfig) -> tuple[np.ndarray, list[str]]:
    """One label map as classes on the model grid, and plan_grid's warnings."""
    values, affine = _read_map(path, config)
    classes = T.map_labels(values, list(config.labels.values()))
    target = f"no {config.target!r} voxels (values {config.labels[config.target]})"
    if not (classes == config.target_class).any():
        raise InputError(path, target)
    # plan_grid reads only the image's shape for target and no crops; a zero-stride
    # stand-in costs no memory
    scan = Scan(
        image=np.broadcast_to(np.float32(0.0), classes.shape),
        affine=affine,
        label=classes,
        case_id=nifti_stem(path),
        provenance={"source": str(path), "label": str(path)},
    )
    grid_config = config if config.crop == "target" else replace(config, crop="none")
    grid, warnings = plan_grid(scan, grid_config, classes)
    on_grid = T.resample(classes, affine, grid, "nearest", 0)
    if not (on_grid == config.target_class).any():
        raise InputError(
            path, f"the target is lost on the model grid ({config.spacing_mm} mm): too small"
        )
    return on_grid, warnings


__all__ = ["REDRAWS", "RealMasks", "UserMasks", "warp"]
