"""The per-case scores of a segmentation, shared by scoring cached cases
(:mod:`medaug.segment.evaluate`) and scoring synthetic pairs against their own labels
(:mod:`medaug.segment.fidelity`): Dice, 95% Hausdorff distance and surface Dice of
the target, in millimetres, by MONAI (``compute_dice``, ``compute_hausdorff_distance``
with ``percentile=95``, ``compute_surface_dice``), and their means over cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def case_metrics(
    pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], tolerance_mm: float
) -> dict[str, Any]:
    """Dice, HD95 (mm) and surface Dice of binary ``(X, Y, Z)`` masks.

    A missed structure (empty prediction) scores Dice 0 and surface Dice 0, and its
    HD95 is undefined (``None``): averages of HD95 are over the cases that have one.
    """
    import warnings

    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
    p = torch.from_numpy(pred.astype(bool))
    t = torch.from_numpy(truth.astype(bool))
    onehot_p = torch.stack([~p, p])[None].float()
    onehot_t = torch.stack([~t, t])[None].float()
    dice = float(
        compute_dice(onehot_p, onehot_t, include_background=False, ignore_empty=False)[0, 0]
    )
    hd95: float | None = None
    surface = 0.0
    if p.any():
        hd = float(
            compute_hausdorff_distance(
                onehot_p, onehot_t, include_background=False, percentile=95, spacing=list(spacing)
            )[0, 0]
        )
        hd95 = hd if math.isfinite(hd) else None
        surface = float(
            compute_surface_dice(
                onehot_p, onehot_t, [tolerance_mm], include_background=False, spacing=list(spacing)
            )[0, 0]
        )
    return {
        "dice": round(dice, 5),
        "hd95_mm": None if hd95 is None else round(hd95, 3),
        "surface_dice": round(surface, 5),
        "target_voxels": int(t.sum()),
        "predicted_voxels": int(p.sum()),
    }


def summarize_cases(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over cases (HD95 over the cases where it is defined)."""
    hd = [r["hd95_mm"] for r in rows if r["hd95_mm"] is not None]
    return {
        "dice": round(float(np.mean([r["dice"] for r in rows])), 5),
        "hd95_mm": round(float(np.mean(hd)), 3) if hd else None,
        "surface_dice": round(float(np.mean([r["surface_dice"] for r in rows])), 5),
        "missed": sum(r["predicted_voxels"] == 0 for r in rows),
    }


__all__ = ["case_metrics", "summarize_cases"]
