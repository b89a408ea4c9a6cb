"""The cache folder: what ``preprocess`` writes and every later stage reads.

Layout (``OUT``)::

    index.json        cache key, config, one record per case (grid affine, shape,
                      target slices, warnings), skipped cases and why
    config.json       the PreprocessConfig (YAML/JSON readable)
    fingerprint.json  the dataset fingerprint (what the data is)
    splits.json       patient-level train/val splits
    cases/case_0000.json, case_0000_image.npy, case_0000_label.npy,
          case_0000_context.npy

Case arrays are stored slice-major ``(Z, X, Y)`` so that an axial slice is one
contiguous block of a memory-mapped file. The context array is the uint8 map of
:func:`medaug.preprocess.layout.context_map` (0 outside the body, 1..4 tissue),
computed from HU before the window; caches made by older medaugs have none.
:class:`Cache` is the one reader of this layout; ``index.json`` is written last, so a
folder is a cache once it has one (:meth:`Cache.exists`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medaug.errors import InputError
from medaug.preprocess.config import PreprocessConfig
from medaug.preprocess.splits import load_split

INDEX = "index.json"
CONFIG = "config.json"
FINGERPRINT = "fingerprint.json"
CASES = "cases"
#: Every entry a cache folder may hold (a preview is written on request).
ENTRIES = (INDEX, CONFIG, FINGERPRINT, "splits.json", CASES, "preview.png")


def case_paths(root: Path, case_id: str) -> tuple[Path, Path, Path, Path]:
    """A case's record, image, label and context files."""
    d = root / CASES
    return (
        d / f"{case_id}.json",
        d / f"{case_id}_image.npy",
        d / f"{case_id}_label.npy",
        d / f"{case_id}_context.npy",
    )


def case_number(case_id: str) -> int:
    """``case_0003`` -> 3 (discovery names every case so)."""
    return int(case_id.removeprefix("case_"))


class Cache:
    """A preprocessed cache folder: its index, config and memory-mapped arrays.

    Example:
        >>> cache = Cache("cache")                                  # doctest: +SKIP
        >>> train, val = cache.split(0)                              # doctest: +SKIP
        >>> cache.array(train[0], "image").shape   # (Z, X, Y)       # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        index_path = self.root / INDEX
        try:
            self.index = json.loads(index_path.read_text())
        except FileNotFoundError:
            raise InputError(
                self.root, "not a medaug cache (no index.json); preprocess the scans first"
            ) from None
        except (OSError, ValueError) as exc:
            raise InputError(index_path, f"unreadable cache index ({exc})") from None
        self.config = PreprocessConfig.from_dict(self.index["config"], source=str(index_path))
        self.records = {rec["case_id"]: rec for rec in self.index["cases"]}
        self._maps: dict[tuple[str, str], np.ndarray] = {}

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` is a complete cache folder (not scans, not a killed run)."""
        return (Path(path) / INDEX).is_file()

    @property
    def case_ids(self) -> list[str]:
        return sorted(self.records)

    def split(self, fold: int = 0) -> tuple[list[str], list[str]]:
        """(train case ids, val case ids) of one fold of ``splits.json``."""
        return load_split(self.root, fold)

    def fingerprint(self) -> dict[str, Any]:
        """The dataset fingerprint (``fingerprint.json``; empty if there is none)."""
        path = self.root / FINGERPRINT
        return json.loads(path.read_text()) if path.exists() else {}

    def items(self, cases: list[str]) -> int:
        """Training items of ``cases``: slices of a 2D cache, volumes of a 3D one."""
        if self.config.dims == 3:
            return len(cases)
        return sum(int(self.records[c]["shape"][2]) for c in cases)

    @property
    def has_context(self) -> bool:
        """Whether every case has its context map (caches of older medaugs have none)."""
        return all(case_paths(self.root, c)[3].is_file() for c in self.records)

    def check_context(self, cases: list[str]) -> None:
        """Raise the :meth:`array` error of the first of ``cases`` without a context map
        (before a run starts, rather than at its first batch)."""
        for case_id in cases:
            path = case_paths(self.root, case_id)[3]
            if not path.is_file():
                raise _no_context(path)

    def array(self, case_id: str, kind: str) -> np.ndarray:
        """The memory-mapped ``(Z, X, Y)`` array of a case (``kind`` image, label or
        context).

        Raises:
            InputError: the file is unreadable, or a context map is missing (the cache
                was made by an older medaug).
        """
        key = (case_id, kind)
        if key not in self._maps:
            path = self.root / CASES / f"{case_id}_{kind}.npy"
            if kind == "context" and not path.is_file():
                raise _no_context(path)
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
        image = np.ascontiguousarray(self.array(case_id, "image"))
        return hashlib.sha256(image.tobytes()).hexdigest()

    def __getstate__(self) -> dict[str, Any]:
        # memory maps are reopened in each worker instead of being pickled as arrays
        return {**self.__dict__, "_maps": {}}


def _no_context(path: Path) -> InputError:
    return InputError(
        path, "no context map in this cache (made by an older medaug); preprocess again"
    )


__all__ = ["CASES", "CONFIG", "ENTRIES", "FINGERPRINT", "INDEX", "Cache", "case_number"]
