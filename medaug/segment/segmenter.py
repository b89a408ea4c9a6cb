"""The segmenter itself, shared by training and scoring: the MONAI U-Net, its
checkpoint (``segmenter.pt``, the only code that knows its keys), and the cache its
data come from.

``segment/train.py`` writes a segmenter and ``segment/evaluate.py`` scores one; both
import this module and neither imports the other's helpers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import medaug
from medaug.errors import ConfigError, InputError
from medaug.io.atomic import atomic_path
from medaug.preprocess.cache import Cache
from medaug.preprocess.config import PreprocessConfig
from medaug.preprocess.pipeline import open_cache
from medaug.segment.config import SegmentConfig
from medaug.train.checkpoint import FORMAT, read_state

CHECKPOINT = "segmenter.pt"


def build_unet(cfg: SegmentConfig, dims: int) -> torch.nn.Module:
    """MONAI ``UNet``: one image channel in, background + target out."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=dims,
        in_channels=1,
        out_channels=2,
        channels=cfg.channels,
        strides=cfg.strides,
        num_res_units=cfg.res_units,
    )


def save_segmenter(
    path: Path,
    net: torch.nn.Module,
    cfg: SegmentConfig,
    preprocess: PreprocessConfig,
    *,
    step: int,
    split: dict[str, Any],
    synthetic: dict[str, Any] | None,
) -> Path:
    """Write ``segmenter.pt`` (safe format: tensors, numbers, JSON text), atomically.

    Args:
        path: the file.
        net: the trained U-Net.
        cfg: its settings; ``preprocess``: its cache's config (grid, window, target).
        step: steps it trained.
        split: the cases it trained on, by content hash (``split_record``).
        synthetic: what synthetic data it saw (cases, items, generator hash), or None.
    """
    state = {
        "format": FORMAT,
        "kind": "segmenter",
        "medaug_version": medaug.__version__,
        "step": step,
        "segment_config": json.dumps(cfg.to_dict()),
        "preprocess_config": json.dumps(preprocess.to_dict()),
        "split": json.dumps(split),
        "synthetic": json.dumps(synthetic),
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_segmenter(path: str | os.PathLike[str], device: Any = "cpu"):
    """Rebuild a segmenter from ``segmenter.pt`` (or the folder holding it).

    Returns:
        ``(net, SegmentConfig, PreprocessConfig, split)`` with the net in eval mode.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
        if not path.exists():
            raise InputError(
                path.parent, f"no {CHECKPOINT} here (the {{out}} folder of a segmenter's training)"
            )
    state = read_state(path, kind="segmenter")
    source = str(path)
    cfg = SegmentConfig.from_dict(json.loads(state["segment_config"]), source=source)
    pp = PreprocessConfig.from_dict(json.loads(state["preprocess_config"]), source=source)
    net = build_unet(cfg, pp.dims)
    net.load_state_dict(state["model"])
    return net.to(device).eval(), cfg, pp, json.loads(state["split"])


def data_cache(
    data: str | os.PathLike[str],
    scratch: Path,
    dims: int | None,
    note: Callable[[str], None] | None,
    config: PreprocessConfig | None = None,
    against: str = "the one required",
) -> Cache:
    """``data`` as an open cache (:func:`medaug.preprocess.open_cache`): a cache with
    ``config`` (any config when None), or scans preprocessed into ``scratch`` with
    ``config`` (default ``PreprocessConfig(dims)``)."""
    if config is None:
        default = PreprocessConfig(dims=3 if dims == 3 else 2)
        config = Cache(data).config if Cache.exists(data) else default
    cache = open_cache(
        data, scratch, config, against=against, purpose=" for segmentation", note=note
    )
    if dims is not None and dims != cache.config.dims:
        raise ConfigError(f"a {cache.config.dims}D cache, but {{dims}} {dims}", prefix=f"{data}: ")
    return cache


__all__ = ["CHECKPOINT", "build_unet", "data_cache", "load_segmenter", "save_segmenter"]
