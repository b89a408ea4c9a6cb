"""Patient-level splits moved to :mod:`medaug.preprocess.splits` (``preprocess`` writes
them with the cache); this name stays for existing imports."""

from __future__ import annotations

from medaug.preprocess.splits import (
    SPLITS,
    load_split,
    make_splits,
    recorded_sides,
    save_splits,
    split_record,
    training_cases,
)

__all__ = [
    "SPLITS",
    "load_split",
    "make_splits",
    "recorded_sides",
    "save_splits",
    "split_record",
    "training_cases",
]
