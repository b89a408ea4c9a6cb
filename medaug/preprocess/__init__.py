"""Preprocessing: scans in HU on their own grids -> tensors in [-1, 1] on the model grid.

Example:
    >>> from medaug.preprocess import PreprocessConfig, preprocess, invert
    >>> result = preprocess("ct_dir", "cache", PreprocessConfig(dims=3))  # doctest: +SKIP
    >>> scan = invert(sample, result.config)   # back to HU and mm           # doctest: +SKIP
"""

from __future__ import annotations

from medaug.preprocess.config import PreprocessConfig
from medaug.preprocess.pipeline import (
    Preprocessed,
    Preprocessing,
    grid_affine,
    invert,
    open_cache,
    plan_grid,
    preprocess,
    preprocess_scan,
)

__all__ = [
    "PreprocessConfig",
    "Preprocessed",
    "Preprocessing",
    "grid_affine",
    "invert",
    "open_cache",
    "plan_grid",
    "preprocess",
    "preprocess_scan",
]
