"""Training data: cached slice and volume datasets, patient-level splits, and the
built-in phantom cohort."""

from __future__ import annotations

from typing import Any

__all__ = ["Cache", "SliceDataset", "VolumeDataset", "load_split", "make_splits"]


def __getattr__(name: str) -> Any:
    # torch is imported only when a dataset is asked for, not by the phantom CLI
    if name in ("Cache", "SliceDataset", "VolumeDataset"):
        from medaug.data import datasets

        return getattr(datasets, name)
    if name in ("load_split", "make_splits"):
        from medaug.data import splits

        return getattr(splits, name)
    raise AttributeError(f"module 'medaug.data' has no attribute {name!r}")
