"""Training data: cached slice and volume datasets, synthetic datasets and their mix
with real ones, patient-level splits, and the built-in phantom cohort."""

from __future__ import annotations

from typing import Any

__all__ = [
    "Cache", "MixedDataset", "SliceDataset", "SyntheticDataset", "VolumeDataset", "load_split",
    "make_splits", "mix",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    # torch is imported only when a dataset is asked for, not by the phantom CLI
    if name == "Cache":
        from medaug.preprocess.cache import Cache

        return Cache
    if name in ("SliceDataset", "VolumeDataset"):
        from medaug.data import datasets

        return getattr(datasets, name)
    if name in ("SyntheticDataset", "MixedDataset", "mix"):
        from medaug.data import synthetic

        return getattr(synthetic, name)
    if name in ("load_split", "make_splits"):
        from medaug.preprocess import splits

        return getattr(splits, name)
    raise AttributeError(f"module 'medaug.data' has no attribute {name!r}")
