"""Scoring a segmenter: per-case Dice, 95% Hausdorff distance and surface Dice of the
target structure, on whole cases of a cache (all slices of a 2D case, the volume of a
3D one, by sliding window), in millimetres of the model grid.

The metrics are MONAI's (``compute_dice``, ``compute_hausdorff_distance`` with
``percentile=95``, ``compute_surface_dice``), with the grid's spacing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medaug.errors import ConfigError, InputError
from medaug.segment.config import SegmentConfig


@torch.no_grad()
def predict(net: torch.nn.Module, cache: Any, case_id: str, cfg: SegmentConfig) -> np.ndarray:
    """The segmenter's ``(X, Y, Z)`` uint8 target mask of one cached case."""
    device = next(net.parameters()).device
    image = torch.from_numpy(np.array(cache.array(case_id, "image"), dtype=np.float32))
    autocast = device.type == "cuda" and cfg.amp == "auto"
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        if cache.config.dims == 2:  # (Z, X, Y): the slices are the batch
            out = [
                net(image[z : z + 32, None].to(device)).float().argmax(1).cpu()
                for z in range(0, image.shape[0], 32)
            ]
            mask = torch.cat(out).permute(1, 2, 0)
        else:
            from monai.inferers import sliding_window_inference

            volume = image.permute(1, 2, 0)[None, None].to(device)
            logits = sliding_window_inference(
                volume, tuple(cache.config.grid), sw_batch_size=2, predictor=net,
                overlap=cfg.sw_overlap, mode="gaussian",
            )  # fmt: skip
            mask = torch.as_tensor(logits).float().argmax(1)[0].cpu()
    return mask.numpy().astype(np.uint8)


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


def score(
    net: torch.nn.Module, cache: Any, cases: Sequence[str], cfg: SegmentConfig
) -> dict[str, Any]:
    """Per-case and mean scores of ``net`` on ``cases`` of ``cache``.

    Raises:
        InputError: none of the cases holds the target (nothing to score against).
    """
    target = cache.config.target_class
    rows = []
    for case_id in cases:
        truth = np.moveaxis(np.asarray(cache.array(case_id, "label")) == target, 0, -1)
        if not truth.any():
            continue
        pred = predict(net, cache, case_id, cfg)
        rows.append(
            {
                "case": case_id,
                **case_metrics(pred, truth, cache.config.spacing_mm, cfg.tolerance_mm),
            }
        )
    if not rows:
        raise InputError(
            cache.root,
            f"the {len(cases)} test case(s) hold no {cache.config.target} voxels: nothing to score",
        )
    return {
        "cases": rows,
        "skipped_without_target": len(cases) - len(rows),
        **summarize_cases(rows),
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


def evaluate_segmenter(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    device: str = "auto",
    include_training: bool = False,
    on_event: Any = None,
) -> dict[str, Any]:
    """Score a trained segmenter on the labelled cases of ``data``.

    Args:
        model: ``segmenter.pt`` or the folder holding it.
        data: a cache or a folder of labelled scans (preprocessed with the model's
            config into ``out/cache``); or a ``medaug synth`` folder, whose pairs are
            each scored against their own label
            (:func:`medaug.evaluate.fidelity.evaluate_synthetic`).
        out: where ``evaluation.json`` goes (default the model's folder).
        device: where to run.
        include_training: also score cases the segmenter trained on (recognised by
            content hash); by default they are left out and counted.
        on_event: one-line notes.

    Returns:
        the evaluation document (also written as ``evaluation.json``).
    """
    from medaug.data.splits import recorded_sides
    from medaug.io.atomic import write_json
    from medaug.segment.train import data_cache, load_segmenter
    from medaug.train.distributed import pick_device

    if (Path(data) / "manifest.json").exists():  # a synthesis folder: label fidelity
        from medaug.evaluate.fidelity import evaluate_synthetic

        return evaluate_synthetic(model, data, out=out, device=device, on_event=on_event)
    note = on_event or (lambda _msg: None)
    model = Path(model)
    net, cfg, pp, split = load_segmenter(model, pick_device(device))
    folder = Path(out) if out is not None else (model if model.is_dir() else model.parent)
    cache = data_cache(data, folder / "cache-eval", None, note, pp, "the segmenter's")
    cases = list(cache.case_ids)
    sides = recorded_sides(cache, split)
    seen = 0
    if sides is not None and not include_training:
        seen = len(sides[0])
        cases = sides[1]
        if not cases:
            raise ConfigError(
                f"{data}: every case is one the segmenter trained on; score other cases "
                "(or pass --include-training)"
            )
    if seen:
        note(f"left out {seen} case(s) the segmenter trained on")
    doc = {"model": str(model), "left_out_training_cases": seen, **score(net, cache, cases, cfg)}
    write_json(folder / "evaluation.json", doc)
    return doc


__all__ = ["case_metrics", "evaluate_segmenter", "predict", "score", "summarize_cases"]
