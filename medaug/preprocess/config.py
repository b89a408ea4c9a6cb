"""``PreprocessConfig``: every choice the preprocessing stage makes, in one dataclass.

The config is written next to every cache and travels with every checkpoint, so a
tensor in [-1, 1] on the model grid can always be mapped back to Hounsfield units and
millimetres (:func:`medaug.preprocess.invert`).

Example (YAML; JSON works the same):

    dims: 3
    spacing_mm: [1.0, 1.0, 1.5]
    hu_window: [-135, 215]
    grid_3d: [96, 96, 96]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medaug.errors import ConfigError, InputError
from medaug.io.atomic import write_json
from medaug.settings import Settings

Crop = Literal["target", "body", "none"]
Interpolation = Literal["linear", "bspline"]

#: Model grids one option away (``--grid``): 2D slice sizes and 3D volume sizes.
GRIDS_2D = (64, 128, 256)
GRIDS_3D = (32, 64, 96, 128)


@dataclass
class PreprocessConfig(Settings):
    """How scans become training tensors. Defaults suit TCIA Pancreas-CT on a CPU.

    Attributes:
        dims: 2 caches axial slices (``SliceDataset``), 3 caches volumes
            (``VolumeDataset``).
        spacing_mm: target voxel size (x, y, z) in mm; TCIA Pancreas-CT is about
            0.7-0.9 mm in-plane with 1.5-2.5 mm slices. The default 3 mm in-plane puts
            a 192 mm field on the default 64^2 grid: the whole pancreas (boxes up to
            about 140 x 60 mm, the phantom's and Pancreas-CT's) and the 20 mm margin,
            where 1.5 mm (a 96 mm field) cut the organ on every case.
        image_interpolation: ``linear`` or ``bspline`` (cubic) for the image; the
            label always uses nearest neighbour.
        hu_window: (low, high) HU clipped and mapped linearly to [-1, 1]. The default
            is the abdominal soft-tissue window (width 400, level 40).
        crop: ``target`` centres the grid on the target structure's box, ``body`` on
            the body, ``none`` on the scan.
        margin_mm: added around the target or body box on every side, mm.
        body_threshold_hu: voxels above this HU belong to the body (for ``body`` crops,
            the fingerprint's body statistics and the cached context map).
        tissue_hu: HU cut points between air/lung, fat, soft tissue and bone/contrast
            inside the body, for the context map cached beside each label
            (:func:`medaug.preprocess.layout.context_map`).
        grid_2d: model slice size (x, y) in voxels; the z range is the box's.
            ``None`` keeps the box's own size (no pad or crop).
        grid_3d: model volume size (x, y, z) in voxels, or ``None`` for the box's size.
        context_slices: 2.5D: this many neighbouring slices on each side become extra
            image channels (0 = plain 2D).
        target_fraction: in 2D, the share of sampled slices that contain the target
            (``SliceDataset.sampler``); the rest are drawn from the other slices.
        labels: output classes, each a list of source label values merged into it
            (MSD's pancreas task: ``{"pancreas": [1, 2]}``). Other values become 0.
        target: the class the crop and the slice sampler centre on.
        context_labels: label classes that are context, not output: organs a
            multi-organ label map carries beside the target (TotalSegmentator, BTCV).
            They condition mask-conditioned generators, in the layout beside the
            HU-derived tissue classes, and are left out of synthetic labels. They are
            numbered after the other classes (``labels`` is reordered so).
        require_label: scans without a label are skipped (with a warning), since a
            generator of image + label pairs cannot learn from them.
        cache_dtype: ``float32`` or ``float16`` for cached images (float16 halves the
            cache; its error is below 0.2 HU in the default window).
        min_coverage: a scan must cover this fraction of the crop along every axis,
            or it is skipped as too small (the rest would be padding).
    """

    dims: Literal[2, 3] = 2
    spacing_mm: tuple[float, float, float] = (3.0, 3.0, 2.5)
    image_interpolation: Interpolation = "linear"
    hu_window: tuple[float, float] = (-160.0, 240.0)
    crop: Crop = "target"
    margin_mm: float = 20.0
    body_threshold_hu: float = -500.0
    tissue_hu: tuple[float, float, float] = (-400.0, -30.0, 200.0)
    grid_2d: tuple[int, int] | None = (64, 64)
    grid_3d: tuple[int, int, int] | None = (32, 32, 32)
    context_slices: int = 0
    target_fraction: float = 0.5
    labels: dict[str, list[int]] = field(default_factory=lambda: {"pancreas": [1]})
    target: str = "pancreas"
    context_labels: tuple[str, ...] = ()
    require_label: bool = True
    cache_dtype: Literal["float32", "float16"] = "float32"
    min_coverage: float = 0.5

    def __post_init__(self) -> None:
        # YAML and JSON give lists; keep tuples so configs compare equal
        self.spacing_mm = _floats(self.spacing_mm, 3, "spacing_mm")  # type: ignore[assignment]
        self.hu_window = _floats(self.hu_window, 2, "hu_window")  # type: ignore[assignment]
        self.tissue_hu = _floats(self.tissue_hu, 3, "tissue_hu")  # type: ignore[assignment]
        if self.grid_2d is not None:
            self.grid_2d = _ints(self.grid_2d, 2, "grid_2d")  # type: ignore[assignment]
        if self.grid_3d is not None:
            self.grid_3d = _ints(self.grid_3d, 3, "grid_3d")  # type: ignore[assignment]
        self.labels = {str(k): [int(v) for v in _as_list(vs)] for k, vs in self.labels.items()}
        self.context_labels = tuple(str(c) for c in _as_list(self.context_labels))
        self.validate()
        # the output classes first, the context classes after them: a synthetic label
        # keeps exactly the classes 1..output_classes
        order = sorted(self.labels, key=lambda name: name in self.context_labels)
        self.labels = {name: self.labels[name] for name in order}

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first value that cannot work."""
        if self.dims not in (2, 3):
            raise ConfigError(f"dims must be 2 or 3, got {self.dims!r}")
        if any(s <= 0 for s in self.spacing_mm):
            raise ConfigError(f"spacing_mm must be positive, got {list(self.spacing_mm)}")
        low, high = self.hu_window
        if low >= high:
            raise ConfigError(f"hu_window must be (low, high) with low < high, got [{low}, {high}]")
        if any(a >= b for a, b in zip(self.tissue_hu, self.tissue_hu[1:], strict=False)):
            raise ConfigError(
                f"tissue_hu must be 3 increasing HU cut points, got {list(self.tissue_hu)}"
            )
        if self.image_interpolation not in ("linear", "bspline"):
            raise ConfigError(
                f"image_interpolation must be linear or bspline, got {self.image_interpolation!r}"
            )
        if self.crop not in ("target", "body", "none"):
            raise ConfigError(f"crop must be target, body or none, got {self.crop!r}")
        if self.margin_mm < 0:
            raise ConfigError(f"margin_mm must be >= 0, got {self.margin_mm}")
        for name, grid in (("grid_2d", self.grid_2d), ("grid_3d", self.grid_3d)):
            if grid is not None and any(g < 4 for g in grid):
                raise ConfigError(f"{name} must be at least 4 voxels per axis, got {list(grid)}")
        if self.context_slices < 0:
            raise ConfigError(f"context_slices must be >= 0, got {self.context_slices}")
        if not 0.0 <= self.target_fraction <= 1.0:
            raise ConfigError(f"target_fraction must be in [0, 1], got {self.target_fraction}")
        if not self.labels:
            raise ConfigError("labels must name at least one class")
        if len(self.labels) > 254:
            raise ConfigError("labels: at most 254 classes fit a uint8 label map")
        if any(v <= 0 or v > 255 for vs in self.labels.values() for v in vs):
            raise ConfigError(f"labels: source values must be in 1..255, got {self.labels}")
        if self.target not in self.labels:
            raise ConfigError(f"target {self.target!r} is not one of labels {list(self.labels)}")
        unknown = [c for c in self.context_labels if c not in self.labels]
        if unknown:
            raise ConfigError(
                f"context_labels: {unknown[0]!r} is not one of labels {list(self.labels)}"
            )
        if self.target in self.context_labels:
            raise ConfigError(f"context_labels: the target {self.target!r} cannot be context")
        if self.cache_dtype not in ("float32", "float16"):
            raise ConfigError(f"cache_dtype must be float32 or float16, got {self.cache_dtype!r}")
        if not 0.0 < self.min_coverage <= 1.0:
            raise ConfigError(f"min_coverage must be in (0, 1], got {self.min_coverage}")

    @property
    def grid(self) -> tuple[int, ...] | None:
        """The model grid of this config's ``dims``."""
        return self.grid_2d if self.dims == 2 else self.grid_3d

    @property
    def target_class(self) -> int:
        """The target's value in the cached label map (classes are numbered 1, 2, ...)."""
        return list(self.labels).index(self.target) + 1

    @property
    def output_classes(self) -> int:
        """Label classes a synthetic label keeps (background not counted): every class
        but the context ones, numbered 1..output_classes."""
        return len(self.labels) - len(self.context_labels)

    def output_label(self, label: Any) -> Any:
        """A cached label map as a synthetic label: the context classes set to
        background (a NumPy array or a torch tensor, returned as the same kind)."""
        if not self.context_labels:
            return label
        return label * (label <= self.output_classes)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PreprocessConfig:
        """Read a YAML or JSON file (JSON is YAML, so one parser reads both)."""
        import yaml

        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text())
        except FileNotFoundError:
            raise InputError(p, "config file does not exist") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(p, f"not a readable YAML/JSON config ({problem})") from None
        return cls.from_dict(data or {}, source=str(p))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as JSON (atomically)."""
        write_json(path, self.to_dict())


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _floats(value: Any, n: int, name: str) -> tuple[float, ...]:
    items = _as_list(value)
    if len(items) == 1 and n > 1 and name == "spacing_mm":
        items = items * n  # one number means isotropic
    try:
        out = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {n} numbers, got {value!r}") from None
    if len(out) != n:
        raise ConfigError(f"{name} must be {n} numbers, got {value!r}")
    return out


def _ints(value: Any, n: int, name: str) -> tuple[int, ...]:
    items = _as_list(value)
    if len(items) == 1:
        items = items * n  # one number means a square / cube
    try:
        out = tuple(int(v) for v in items)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {n} integers, got {value!r}") from None
    if len(out) != n or any(float(a) != float(b) for a, b in zip(items, out, strict=True)):
        raise ConfigError(f"{name} must be {n} integers, got {value!r}")
    return out
