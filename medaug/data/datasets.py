"""PyTorch / MONAI datasets over a preprocessed cache (``medaug preprocess``).

Items are dicts, as MONAI's dictionary transforms expect:

- ``image``: float32 tensor in [-1, 1], channel-first: ``(1 + 2c, X, Y)`` for slices
  (``c`` neighbouring slices on each side as extra channels, 2.5D) or
  ``(1, X, Y, Z)`` for volumes.
- ``label``: float32 tensor ``(1, ...)`` holding the class map, or ``(K, ...)``
  one-hot channels (``one_hot=True``).
- ``case``: the case number (``case_0003`` -> 3), ``case_id``, and ``slice`` (2D).

Arrays are memory-mapped, opened lazily in each DataLoader worker, so a dataset costs
no memory until it is read and pickles cheaply.

Example:
    >>> from medaug.data import SliceDataset, load_split
    >>> train, val = load_split("cache")                               # doctest: +SKIP
    >>> ds = SliceDataset("cache", cases=train, context=1)             # doctest: +SKIP
    >>> loader = DataLoader(ds, batch_size=32, sampler=ds.sampler())   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from medaug.errors import ConfigError, InputError
from medaug.preprocess.config import PreprocessConfig


class Cache:
    """A preprocessed cache folder: its index, config and memory-mapped arrays."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        index_path = self.root / "index.json"
        try:
            self.index = json.loads(index_path.read_text())
        except FileNotFoundError:
            raise InputError(
                self.root, "not a medaug cache (no index.json); run `medaug preprocess` first"
            ) from None
        except (OSError, ValueError) as exc:
            raise InputError(index_path, f"unreadable cache index ({exc})") from None
        self.config = PreprocessConfig.from_dict(self.index["config"], source=str(index_path))
        self.records = {rec["case_id"]: rec for rec in self.index["cases"]}
        self._maps: dict[tuple[str, str], np.ndarray] = {}

    @property
    def case_ids(self) -> list[str]:
        return sorted(self.records)

    def array(self, case_id: str, kind: str) -> np.ndarray:
        """The memory-mapped ``(Z, X, Y)`` array of a case (``kind`` image or label)."""
        key = (case_id, kind)
        if key not in self._maps:
            path = self.root / "cases" / f"{case_id}_{kind}.npy"
            try:
                self._maps[key] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise InputError(path, f"unreadable cache array ({exc})") from None
        return self._maps[key]

    def affine(self, case_id: str, z: int | None = None) -> np.ndarray:
        """RAS affine of a case's grid, or of its slice ``z`` (a one-slice volume)."""
        affine = np.array(self.records[case_id]["affine"], dtype=np.float64)
        if z is not None:
            affine[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, z]) + affine[:3, 3]
        return affine

    def content_hash(self, case_id: str) -> str:
        """SHA-256 of a case's cached image: the same scan preprocessed with the same
        config gives the same hash, whatever its path (used to recognise training
        cases in another copy of the data)."""
        import hashlib

        image = np.ascontiguousarray(self.array(case_id, "image"))
        return hashlib.sha256(image.tobytes()).hexdigest()

    def __getstate__(self) -> dict[str, Any]:
        # memory maps are reopened in each worker instead of being pickled as arrays
        return {**self.__dict__, "_maps": {}}


def _cases(cache: Cache, cases: Sequence[str] | None) -> list[str]:
    if cases is None:
        return cache.case_ids
    missing = [c for c in cases if c not in cache.records]
    if missing:
        raise ConfigError(f"{cache.root}: no case {missing[0]} in this cache")
    return list(cases)


def case_number(case_id: str) -> int:
    """``case_0003`` -> 3 (discovery names every case so)."""
    return int(case_id.removeprefix("case_"))


class _CacheDataset(Dataset):
    def __init__(
        self,
        cache: str | os.PathLike[str] | Cache,
        cases: Sequence[str] | None,
        transform: Callable[[dict[str, Any]], Any] | None,
        one_hot: bool,
    ):
        self.cache = cache if isinstance(cache, Cache) else Cache(cache)
        self.cases = _cases(self.cache, cases)
        self.transform = transform
        self.one_hot = one_hot
        self.n_classes = len(self.cache.config.labels)

    @property
    def config(self) -> PreprocessConfig:
        return self.cache.config

    def _label(self, classes: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(classes))
        if self.one_hot:
            values = torch.arange(1, self.n_classes + 1, dtype=t.dtype).view(-1, *[1] * t.ndim)
            return (t.unsqueeze(0) == values).float()
        return t.unsqueeze(0).float()

    def _finish(self, item: dict[str, Any]) -> Any:
        return self.transform(item) if self.transform is not None else item


class SliceDataset(_CacheDataset):
    """Axial slices of a 2D cache, with optional neighbouring slices as channels.

    Args:
        cache: the cache folder (or an open :class:`Cache`).
        cases: case ids to include (``load_split``); default all.
        context: neighbouring slices on each side as extra image channels (2.5D);
            default the cache config's ``context_slices``. Slices past the end of a
            case repeat the edge slice.
        transform: applied to each item dict (MONAI dictionary transforms).
        one_hot: labels as K one-hot channels instead of one class-map channel.
    """

    def __init__(
        self,
        cache: str | os.PathLike[str] | Cache,
        cases: Sequence[str] | None = None,
        *,
        context: int | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        one_hot: bool = False,
    ):
        super().__init__(cache, cases, transform, one_hot)
        if self.cache.config.dims != 2:
            raise ConfigError(f"{self.cache.root}: a 3D cache; use VolumeDataset")
        self.context = self.cache.config.context_slices if context is None else context
        if self.context < 0:
            raise ConfigError(f"context must be >= 0, got {self.context}")
        items, target = [], []
        for ci, case_id in enumerate(self.cases):
            rec = self.cache.records[case_id]
            on = set(rec["target_slices"])
            for z in range(rec["shape"][2]):
                items.append((ci, z))
                target.append(z in on)
        self.items = np.array(items, dtype=np.int64).reshape(-1, 2)
        #: True where the slice holds target voxels (the sampler's weights).
        self.has_target = np.array(target, dtype=bool)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        ci, z = (int(v) for v in self.items[i])
        case_id = self.cases[ci]
        image = self.cache.array(case_id, "image")
        if self.context:
            zs = np.clip(np.arange(z - self.context, z + self.context + 1), 0, image.shape[0] - 1)
            stack = np.array(image[zs], dtype=np.float32)
        else:
            stack = np.array(image[z : z + 1], dtype=np.float32)
        label = np.array(self.cache.array(case_id, "label")[z])
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(stack)),
            "label": self._label(label),
            "case": case_number(case_id),
            "case_id": case_id,
            "slice": z,
        }
        return self._finish(item)

    def sample_weights(self, target_fraction: float | None = None) -> np.ndarray:
        """Per-slice weights that draw target-bearing slices ``target_fraction`` of the time.

        Without them, a pancreas present on 15% of a scan's slices would be on 15% of
        the batches. Default fraction: the cache config's ``target_fraction``; if no
        slice (or every slice) holds the target, every slice weighs the same.
        """
        frac = self.cache.config.target_fraction if target_fraction is None else target_fraction
        if not 0.0 <= frac <= 1.0:
            raise ConfigError(f"target_fraction must be in [0, 1], got {frac}")
        n_on = int(self.has_target.sum())
        n_off = len(self.has_target) - n_on
        weights = np.ones(len(self.has_target), dtype=np.float64)
        if n_on and n_off:
            weights[self.has_target] = frac / n_on
            weights[~self.has_target] = (1.0 - frac) / n_off
        return weights

    def sampler(
        self,
        num_samples: int | None = None,
        target_fraction: float | None = None,
        generator: torch.Generator | None = None,
    ) -> WeightedRandomSampler:
        """A ``WeightedRandomSampler`` over :meth:`sample_weights`."""
        weights = self.sample_weights(target_fraction)
        return WeightedRandomSampler(
            weights.tolist(), num_samples or len(weights), generator=generator
        )


class VolumeDataset(_CacheDataset):
    """Whole model-grid volumes of a 3D cache, one item per case.

    Args are those of :class:`SliceDataset` (without ``context``).
    """

    def __init__(
        self,
        cache: str | os.PathLike[str] | Cache,
        cases: Sequence[str] | None = None,
        *,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        one_hot: bool = False,
    ):
        super().__init__(cache, cases, transform, one_hot)
        if self.cache.config.dims != 3:
            raise ConfigError(f"{self.cache.root}: a 2D cache; use SliceDataset")

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> Any:
        case_id = self.cases[i]
        # stored (Z, X, Y) -> (X, Y, Z)
        image = np.asarray(self.cache.array(case_id, "image"), dtype=np.float32)
        label = np.asarray(self.cache.array(case_id, "label"))
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(1, 2, 0)))[None],
            "label": self._label(label.transpose(1, 2, 0)),
            "case": case_number(case_id),
            "case_id": case_id,
        }
        return self._finish(item)
