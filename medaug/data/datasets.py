"""PyTorch / MONAI datasets over a preprocessed cache (``medaug preprocess``).

Items are dicts, as MONAI's dictionary transforms expect:

- ``image``: float32 tensor in [-1, 1], channel-first: ``(1 + 2c, X, Y)`` for slices
  (``c`` neighbouring slices on each side as extra channels, 2.5D) or
  ``(1, X, Y, Z)`` for volumes.
- ``label``: float32 tensor ``(1, ...)`` holding the class map, or ``(K, ...)``
  one-hot channels (``one_hot=True``).
- ``context`` (only with ``with_context=True``): float32 tensor ``(1, X, Y)`` or
  ``(1, X, Y, Z)`` holding the cached context map (0 outside the body, 1..4 tissue;
  :func:`medaug.preprocess.layout.context_map`). Off by default, so items keep the
  keys of synthetic datasets they are mixed with.
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

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from medaug.errors import ConfigError
from medaug.preprocess.cache import Cache, case_number
from medaug.preprocess.config import PreprocessConfig


def _cases(cache: Cache, cases: Sequence[str] | None) -> list[str]:
    if cases is None:
        return cache.case_ids
    missing = [c for c in cases if c not in cache.records]
    if missing:
        raise ConfigError(f"{cache.root}: no case {missing[0]} in this cache")
    return list(cases)


class _CacheDataset(Dataset):
    def __init__(
        self,
        cache: str | os.PathLike[str] | Cache,
        cases: Sequence[str] | None,
        transform: Callable[[dict[str, Any]], Any] | None,
        one_hot: bool,
        with_context: bool,
    ):
        self.cache = cache if isinstance(cache, Cache) else Cache(cache)
        self.cases = _cases(self.cache, cases)
        self.transform = transform
        self.one_hot = one_hot
        self.n_classes = len(self.cache.config.labels)
        self.with_context = with_context
        if with_context:
            self.cache.check_context(self.cases)

    @property
    def config(self) -> PreprocessConfig:
        return self.cache.config

    def _label(self, classes: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(classes))
        if self.one_hot:
            values = torch.arange(1, self.n_classes + 1, dtype=t.dtype).view(-1, *[1] * t.ndim)
            return (t.unsqueeze(0) == values).float()
        return t.unsqueeze(0).float()

    def _context(self, classes: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(classes)).unsqueeze(0).float()

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
        with_context: add the cached context map as ``"context"``, shaped like the
            class-map label.

    Raises:
        InputError: ``with_context`` and a case has no context map (an older cache).
    """

    def __init__(
        self,
        cache: str | os.PathLike[str] | Cache,
        cases: Sequence[str] | None = None,
        *,
        context: int | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        one_hot: bool = False,
        with_context: bool = False,
    ):
        super().__init__(cache, cases, transform, one_hot, with_context)
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
        if self.with_context:
            item["context"] = self._context(np.array(self.cache.array(case_id, "context")[z]))
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
        with_context: bool = False,
    ):
        super().__init__(cache, cases, transform, one_hot, with_context)
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
        if self.with_context:
            context = self.cache.array(case_id, "context").transpose(1, 2, 0)
            item["context"] = self._context(context)
        return self._finish(item)


#: ``Cache`` lives with the stage that writes the cache (:mod:`medaug.preprocess.cache`).
__all__ = ["Cache", "SliceDataset", "VolumeDataset", "case_number"]
