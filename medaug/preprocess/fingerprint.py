"""The dataset fingerprint: what the scans are before anything is trained on them.

Like nnU-Net's ``dataset_fingerprint.json``: spacings, shapes, HU percentiles inside
the body and inside the target, and target volumes, per case and summarised over the
cohort. ``medaug preprocess --plan-only`` prints it; the cache keeps it beside the
arrays and checkpoints carry it, so a model always says what data it saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medaug.io.scan import Scan
from medaug.preprocess.config import PreprocessConfig
from medaug.preprocess.transforms import bounding_box, world_box

#: HU percentiles recorded inside the body and the target.
PERCENTILES = (0.5, 5.0, 50.0, 95.0, 99.5)

#: The body statistics read every STRIDE-th voxel per axis (1/8 of a scan): the
#: percentiles of 50 million voxels do not change at that precision.
STRIDE = 2


@dataclass
class CaseStats:
    """One scan's fingerprint row (no identifiers: the case index only)."""

    case_id: str
    shape: list[int]
    spacing: list[float]
    orientation: str
    body_hu: dict[str, float]  # percentile -> HU, plus mean and std
    target_hu: dict[str, float] | None
    target_ml: float | None
    target_box_mm: list[float] | None


def _hu_stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    q = np.percentile(values, PERCENTILES)
    stats = {f"p{p:g}": round(float(v), 1) for p, v in zip(PERCENTILES, q, strict=True)}
    stats["mean"] = round(float(values.mean(dtype=np.float64)), 1)
    stats["std"] = round(float(values.std(dtype=np.float64)), 1)
    return stats


def case_stats(scan: Scan, classes: np.ndarray | None, config: PreprocessConfig) -> CaseStats:
    """Measure one scan (HU image, and its class map if labelled)."""
    # .T: scans are x-fastest in memory, and boolean indexing is fast in memory order
    thin = scan.image[::STRIDE, ::STRIDE, ::STRIDE].T
    body = thin[thin > config.body_threshold_hu]
    target_hu = target_ml = target_box = None
    if classes is not None:
        mask = classes == config.target_class
        box = bounding_box(mask)
        if box is not None:
            target_hu = _hu_stats(scan.image.T[mask.T])
            voxel_ml = abs(float(np.linalg.det(scan.affine[:3, :3]))) / 1000.0
            target_ml = round(float(mask.sum()) * voxel_ml, 2)
            low, high = world_box(scan.affine, *box)
            target_box = [round(float(v), 1) for v in (high - low) + np.array(scan.spacing)]
    return CaseStats(
        case_id=scan.case_id,
        shape=list(scan.shape),
        spacing=[round(s, 4) for s in scan.spacing],
        orientation=scan.orientation,
        body_hu=_hu_stats(body),
        target_hu=target_hu,
        target_ml=target_ml,
        target_box_mm=target_box,
    )


def _summary(rows: list[list[float]]) -> dict[str, list[float]]:
    a = np.asarray(rows, dtype=np.float64)
    return {
        "min": np.round(a.min(axis=0), 3).tolist(),
        "median": np.round(np.median(a, axis=0), 3).tolist(),
        "max": np.round(a.max(axis=0), 3).tolist(),
    }


def _median_stats(rows: list[dict[str, float]]) -> dict[str, float]:
    """Median over cases of each case's statistic (a percentile of percentiles)."""
    rows = [r for r in rows if r]
    if not rows:
        return {}
    return {k: round(float(np.median([r[k] for r in rows])), 1) for k in rows[0]}


def fingerprint(stats: list[CaseStats], config: PreprocessConfig) -> dict[str, Any]:
    """Summarise per-case statistics over the cohort (JSON-ready)."""
    labelled = [s for s in stats if s.target_ml is not None]
    doc: dict[str, Any] = {
        "cases": len(stats),
        "cases_with_target": len(labelled),
        "target": config.target,
        "spacing_mm": _summary([s.spacing for s in stats]) if stats else {},
        "shape": _summary([[float(v) for v in s.shape] for s in stats]) if stats else {},
        "orientations": sorted({s.orientation for s in stats}),
        "body_hu": _median_stats([s.body_hu for s in stats]),
        "target_hu": _median_stats([s.target_hu or {} for s in labelled]),
        "target_ml": _summary([[s.target_ml or 0.0] for s in labelled]) if labelled else {},
        "target_box_mm": _summary([s.target_box_mm or [] for s in labelled]) if labelled else {},
        "per_case": [asdict(s) for s in stats],
    }
    return doc
