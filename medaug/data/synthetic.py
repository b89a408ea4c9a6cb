"""Synthetic pairs inside a segmentation pipeline: a dataset over a synthesis folder and
a mixture of real and synthetic items at a ratio.

``SyntheticDataset`` reads what ``medaug synth`` wrote (its manifest says which files
make a case and on which grid); ``mix`` draws each item of an epoch from the real or
the synthetic side with probability ``ratio``, from a generator seeded by the item's
index, so a mixture is the same whatever the batch size, the worker count or the
number of data-parallel processes.

Example:
    >>> from medaug import SyntheticDataset, mix
    >>> real = SliceDataset("cache", cases=train)                       # doctest: +SKIP
    >>> synth = SyntheticDataset("synthetic", intensity="unit")         # doctest: +SKIP
    >>> loader = DataLoader(mix(real, synth, 0.5), batch_size=16, shuffle=True)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Randomizable
from torch.utils.data import Dataset

from medaug.data.synthfolder import SynthFolder
from medaug.errors import ConfigError, InputError
from medaug.preprocess.config import PreprocessConfig
from medaug.preprocess.pipeline import grid_affine
from medaug.preprocess.transforms import hu_to_unit

Transform = Callable[[dict[str, Any]], Any]


class SyntheticDataset(Dataset):
    """The cases of a ``medaug synth`` folder as MONAI-style dicts.

    A 2D generator's output gives one item per axial slice (``(1, X, Y)``, also for
    ``--stack`` volumes), a 3D generator's one item per case (``(1, X, Y, Z)``), as
    :class:`~medaug.data.SliceDataset` and :class:`~medaug.data.VolumeDataset` do for
    real cases. Items: ``image`` (float32 MetaTensor, HU or [-1, 1]), ``label``
    (float32 MetaTensor, the class map), ``case`` (the synthetic case index),
    ``case_id`` (``synth_0007``); the MetaTensors carry the case's RAS affine.

    Args:
        synth_dir: a folder written by ``medaug synth`` (``manifest.json``).
        transform: applied to each item dict (MONAI dictionary transforms).
        intensity: ``hu`` (Hounsfield units, as the NIfTI files hold them) or
            ``unit`` (the generator's HU window mapped to [-1, 1], as medaug's cached
            real datasets give it).

    Raises:
        InputError: not a synthesis folder, or a case without its label file.
    """

    def __init__(
        self,
        synth_dir: str | os.PathLike[str],
        transform: Transform | None = None,
        *,
        intensity: str = "hu",
    ):
        if intensity not in ("hu", "unit"):
            raise ConfigError(f"intensity must be 'hu' or 'unit', got {intensity!r}")
        self.folder = SynthFolder.open(synth_dir)
        self.root = self.folder.root
        self.manifest = self.folder.manifest
        self.config = self.folder.config
        self.cases: list[dict[str, Any]] = self.folder.cases
        for rec in self.cases:
            if not rec.get("label") or not (self.root / rec["label"]).is_file():
                where = self.root / rec["label"] if rec.get("label") else self.root / "labels"
                raise InputError(where, f"synthetic case {rec['case']} has no label file")
            if not rec.get("image") or not (self.root / rec["image"]).exists():
                raise InputError(self.root / "images", f"synthetic case {rec['case']} has no image")
        self.transform = transform
        self.intensity = intensity
        self.dims = self.folder.dims
        #: (case position, slice) of every item; slice -1 for a 3D item
        self.items: list[tuple[int, int]] = []
        for ci, rec in enumerate(self.cases):
            depth = int(rec["shape"][2])
            self.items += [(ci, z) for z in range(depth)] if self.dims == 2 else [(ci, -1)]
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def arrays(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """A case's ``(X, Y, Z)`` image (in ``intensity`` units) and uint8 label, read
        once and kept (synthetic cases are small: the model grid)."""
        if position not in self._arrays:
            hu, label = self.folder.read_case(self.cases[position])
            image = hu_to_unit(hu, self.config.hu_window) if self.intensity == "unit" else hu
            self._arrays[position] = (np.asarray(image, dtype=np.float32), label)
        return self._arrays[position]

    def __getitem__(self, i: int) -> Any:
        position, z = self.items[i]
        rec = self.cases[position]
        image, label = self.arrays(position)
        affine = torch.from_numpy(_case_affine(self.config, rec["shape"]))
        if z >= 0:
            image, label = image[..., z], label[..., z]
            affine[:3, 3] += affine[:3, 2] * z
        item = {
            "image": MetaTensor(torch.from_numpy(np.ascontiguousarray(image))[None], affine=affine),
            "label": MetaTensor(
                torch.from_numpy(label.astype(np.float32))[None], affine=affine.clone()
            ),
            "case": int(rec["index"]),
            "case_id": str(rec["case"]),
        }
        return self.transform(item) if self.transform is not None else item


def _case_affine(config: PreprocessConfig, shape: list[int]) -> np.ndarray:
    """The RAS affine ``medaug synth`` gives a case (the config's spacing, centred on
    the origin), as its NIfTI files hold it."""
    return grid_affine(config, tuple(int(s) for s in shape))


class MixedDataset(Dataset):
    """Real and synthetic items mixed at a ratio; see :func:`mix`.

    Item ``i`` is drawn from a generator seeded by ``(seed, i)``: synthetic with
    probability ``ratio`` (in [0, 1]; 1 draws only synthetic items, as the gain
    experiment's synthetic-only arm does), then uniformly among the synthetic items,
    or among the real ones by ``real_weights``. Items are
    ``{"image", "label", "synthetic"}`` (1 for a synthetic item), so real and
    synthetic items collate into one batch.
    """

    def __init__(
        self,
        real: Dataset,
        synthetic: Dataset | None,
        ratio: float,
        *,
        length: int | None = None,
        seed: int = 0,
        real_weights: np.ndarray | None = None,
        transform: Transform | None = None,
    ):
        n_real = len(real)  # type: ignore[arg-type]
        if n_real == 0:
            raise ConfigError("the real dataset is empty")
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"the synthetic ratio must be in [0, 1], got {ratio}")
        if ratio > 0 and (synthetic is None or len(synthetic) == 0):  # type: ignore[arg-type]
            raise ConfigError("a synthetic ratio above 0 needs a non-empty synthetic dataset")
        self.real, self.synthetic, self.ratio, self.seed = real, synthetic, float(ratio), seed
        self.transform = transform
        p = None
        if real_weights is not None:
            w = np.asarray(real_weights, dtype=np.float64)
            if w.shape != (n_real,) or (w < 0).any() or w.sum() <= 0:
                raise ConfigError(f"real_weights must be {n_real} non-negative numbers")
            p = np.cumsum(w / w.sum())
        self._cdf = p
        self.length = length if length is not None else math.ceil(n_real / (1.0 - min(ratio, 0.5)))

    def __len__(self) -> int:
        return self.length

    def draw(self, i: int) -> tuple[bool, int]:
        """(synthetic?, index on that side) of item ``i``."""
        rng = np.random.default_rng([self.seed, i])
        if rng.random() < self.ratio:
            return True, int(rng.integers(len(self.synthetic)))  # type: ignore[arg-type]
        if self._cdf is None:
            return False, int(rng.integers(len(self.real)))  # type: ignore[arg-type]
        return False, min(
            int(np.searchsorted(self._cdf, rng.random(), side="right")), len(self._cdf) - 1
        )

    def __getitem__(self, i: int) -> Any:
        synthetic, j = self.draw(i)
        src = (self.synthetic if synthetic else self.real)[j]  # type: ignore[index]
        item = {
            "image": torch.as_tensor(src["image"]),
            "label": torch.as_tensor(src["label"]),
            "synthetic": int(synthetic),
        }
        if self.transform is None:
            return item
        if isinstance(self.transform, Randomizable):  # the item's own, repeatable draw
            self.transform.set_random_state(
                seed=int(np.random.default_rng([self.seed, i, 1]).integers(2**31))
            )
        return self.transform(item)


def mix(
    real: Dataset,
    synthetic: Dataset,
    ratio: float,
    *,
    length: int | None = None,
    seed: int = 0,
    real_weights: np.ndarray | None = None,
    transform: Transform | None = None,
) -> MixedDataset:
    """A dataset whose items are synthetic with probability ``ratio``, real otherwise.

    Args:
        real: a dataset of ``{"image", "label", ...}`` dicts (``SliceDataset``,
            ``VolumeDataset``, a MONAI ``Dataset``...).
        synthetic: a :class:`SyntheticDataset` (or any dataset of such dicts).
        ratio: the expected share of synthetic items, in [0, 1).
        length: items per epoch; default ``len(real) / (1 - ratio)`` (an epoch still
            holds about ``len(real)`` real items), capped at twice ``len(real)``.
        seed: the draws; same seed, same items at the same indices.
        real_weights: sampling weights of the real items (e.g.
            ``SliceDataset.sample_weights()`` to favour slices with the target).
        transform: applied to every mixed item (e.g. classical augmentation); MONAI
            random transforms are reseeded per item, so item ``i`` is repeatable.

    Raises:
        ConfigError: a ratio outside [0, 1), or real and synthetic items on different
            preprocessing grids or intensity scales.
    """
    if not (isinstance(ratio, int | float) and 0.0 <= ratio < 1.0):
        raise ConfigError(f"the synthetic ratio must be in [0, 1), got {ratio}")
    check_compatible(real, synthetic)
    return MixedDataset(
        real, synthetic, ratio, length=length, seed=seed, real_weights=real_weights,
        transform=transform,
    )  # fmt: skip


def check_compatible(real: Any, synthetic: Any) -> None:
    """Refuse a medaug real dataset and a synthetic folder that cannot be mixed: other
    grid, spacing, window or classes, or HU items next to [-1, 1] items."""
    rc: PreprocessConfig | None = getattr(real, "config", None)
    sc: PreprocessConfig | None = getattr(synthetic, "config", None)
    if not isinstance(rc, PreprocessConfig) or not isinstance(sc, PreprocessConfig):
        return
    where = getattr(synthetic, "root", "synthetic data")
    for name in ("dims", "grid", "spacing_mm", "hu_window", "labels"):
        a, b = getattr(rc, name), getattr(sc, name)
        if (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b):
            raise ConfigError(
                f"{where}: made by a generator trained on a different preprocessing "
                f"({name} {b} against the real data's {a})"
            )
    if getattr(synthetic, "intensity", "unit") == "hu":
        raise ConfigError(
            f"{where}: synthetic items in HU next to real items in [-1, 1]; "
            "use SyntheticDataset(..., intensity='unit')"
        )


__all__ = ["MixedDataset", "SyntheticDataset", "check_compatible", "mix"]
