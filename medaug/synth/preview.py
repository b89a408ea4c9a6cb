"""``preview.png`` of a synthesis folder: synthetic slices above real ones."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medaug.preprocess.transforms import hu_to_unit
from medaug.synth.output import PREVIEW, read_case
from medaug.viz import best_slice, overlay, save_sections


def synthesis_preview(
    out: str | os.PathLike[str], manifest: dict, config: Any, real: Any = None, n: int = 8
) -> Path:
    """``out/preview.png``: synthetic slices (the target's largest cross-section of
    the first ``n`` cases) above real slices of the model grid, labels outlined.

    Args:
        out: the synthesis folder.
        manifest: its manifest (the cases' records).
        config: the model's ``PreprocessConfig`` (grid, window, target).
        real: an open cache of real cases on that grid (the lower row), or None.
    """
    out = Path(out)
    target = config.target_class
    scale = max(1, 256 // max(config.grid[:2]) // 2)
    synthetic = []
    for rec in manifest["cases"][:n]:
        hu, label = read_case(out, rec)
        z = best_slice(label, target)
        image = hu_to_unit(hu[:, :, z].astype(np.float32), config.hu_window)
        synthetic.append(overlay(image, label[:, :, z], scale))
    sections = [("synthetic", synthetic)]
    if real is not None:
        tiles = []
        for case_id in real.case_ids[:n]:
            label = np.moveaxis(np.asarray(real.array(case_id, "label")), 0, -1)
            z = best_slice(label, target)
            image = np.asarray(real.array(case_id, "image")[z], dtype=np.float32)
            tiles.append(overlay(image, label[:, :, z], scale))
        sections.append(("real (model grid)", tiles))
    return save_sections(sections, out / PREVIEW, columns=n)


__all__ = ["synthesis_preview"]
