"""Scoring a segmenter: per-case Dice, 95% Hausdorff distance and surface Dice of the
target structure, on whole cases of a cache (all slices of a 2D case, the volume of a
3D one, by sliding window), in millimetres of the model grid.

The metrics are MONAI's (:mod:`medaug.segment.metrics`), with the grid's spacing. A
synthesis folder is scored pair by pair against its own labels
(:func:`medaug.segment.fidelity.evaluate_synthetic`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medaug.data.synthfolder import SynthFolder
from medaug.errors import ConfigError, InputError
from medaug.io.atomic import write_json
from medaug.preprocess.splits import recorded_sides
from medaug.segment import fidelity
from medaug.segment.config import SegmentConfig
from medaug.segment.metrics import case_metrics, summarize_cases
from medaug.segment.segmenter import data_cache, load_segmenter
from medaug.train.distributed import pick_device


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


def scores_text(doc: dict[str, Any], title: str) -> str:
    """A score document (:func:`score`) as a plain table: per case, then the mean."""

    def row(name: str, r: dict[str, Any], voxels: str) -> tuple[str, ...]:
        hd = "–" if r["hd95_mm"] is None else f"{r['hd95_mm']:.1f}"
        return (name, f"{r['dice']:.3f}", hd, f"{r['surface_dice']:.3f}", voxels)

    head = ("case", "Dice", "HD95 mm", "surface Dice", "target voxels")
    rows = [row(r["case"], r, str(r["target_voxels"])) for r in doc["cases"]]
    rows.append(row("mean", doc, ""))
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = [title]
    for r in (head, *rows):
        cells = [r[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    if "fidelity" in doc:  # a synthesis folder: pairs scored against their own labels
        lines.append(fidelity.summary_line(doc["fidelity"], doc["threshold"], doc["unit"]))
    return "\n".join(lines)


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
            (:func:`medaug.segment.fidelity.evaluate_synthetic`).
        out: where ``evaluation.json`` goes (default the model's folder).
        device: where to run.
        include_training: also score cases the segmenter trained on (recognised by
            content hash); by default they are left out and counted.
        on_event: one-line notes.

    Returns:
        the evaluation document (also written as ``evaluation.json``).
    """
    if SynthFolder.exists(data):  # a synthesis folder: each pair against its own label
        return fidelity.evaluate_synthetic(model, data, out=out, device=device, on_event=on_event)
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
                "every case is one the segmenter trained on; score other cases "
                "(or pass {include_training=True})",
                prefix=f"{data}: ",
            )
    if seen:
        note(f"left out {seen} case(s) the segmenter trained on")
    doc = {"model": str(model), "left_out_training_cases": seen, **score(net, cache, cases, cfg)}
    write_json(folder / "evaluation.json", doc)
    return doc


__all__ = [
    "case_metrics",
    "evaluate_segmenter",
    "predict",
    "score",
    "scores_text",
    "summarize_cases",
]
