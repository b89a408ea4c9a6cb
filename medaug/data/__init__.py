"""Training data: cached slice and volume datasets, synthetic datasets and their mix
with real ones, the reader of synthesis folders, and the built-in phantom cohort.

The names load their module on first use, so that the phantom command does not import
torch. ``Cache``, ``load_split`` and ``make_splits`` live with the stage that writes
the cache (:mod:`medaug.preprocess`) and are re-exported here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "Cache": "medaug.preprocess.cache",
    "SliceDataset": "medaug.data.datasets",
    "VolumeDataset": "medaug.data.datasets",
    "SyntheticDataset": "medaug.data.synthetic",
    "MixedDataset": "medaug.data.synthetic",
    "mix": "medaug.data.synthetic",
    "SynthFolder": "medaug.data.synthfolder",
    "load_split": "medaug.preprocess.splits",
    "make_splits": "medaug.preprocess.splits",
}

if TYPE_CHECKING:
    from medaug.data.datasets import SliceDataset, VolumeDataset
    from medaug.data.synthetic import MixedDataset, SyntheticDataset, mix
    from medaug.data.synthfolder import SynthFolder
    from medaug.preprocess.cache import Cache
    from medaug.preprocess.splits import load_split, make_splits


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medaug.data' has no attribute {name!r}")


__all__ = [
    "Cache",
    "MixedDataset",
    "SliceDataset",
    "SynthFolder",
    "SyntheticDataset",
    "VolumeDataset",
    "load_split",
    "make_splits",
    "mix",
]
