"""Label fidelity in ``medaug evaluate``: a segmenter trained on the generator's own
training cases (or given) judges every synthetic pair, beside its score on held-out
real items, the reference a perfect generator would reach; the worst pairs are
drawn. The pair scoring itself is :mod:`medaug.segment.fidelity`'s.

:func:`train` (train the judging segmenter, or reuse the one trained before) also
serves the synthesis filter ``--min-fidelity`` through :func:`judge`, which
:func:`medaug.synth.synthesize` takes as its ``judge``; :mod:`medaug.evaluate.verdict`
puts the numbers into words for the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medaug.data.synthfolder import SynthFolder
from medaug.errors import ConfigError, MedaugError
from medaug.preprocess.cache import Cache
from medaug.preprocess.splits import split_record, training_cases
from medaug.segment.config import SegmentConfig
from medaug.segment.fidelity import (
    THRESHOLD,
    Segmenter,
    load,
    real_items,
    score_pairs,
    synthetic_items,
)
from medaug.segment.segmenter import CHECKPOINT, load_segmenter, save_segmenter
from medaug.segment.train import fit
from medaug.synth.config import SynthConfig
from medaug.synth.sampler import Synthesizer
from medaug.train.distributed import pick_device
from medaug.viz import overlay, radiological, save_sections

#: Steps of the segmenter evaluate trains when none is given.
STEPS = 300
#: Pairs shown in the worst-pairs preview.
WORST = 8
#: Where evaluate keeps its segmenter and the preview, under the synthesis folder.
FOLDER = Path("evaluation")
PREVIEW = FOLDER / "fidelity-worst.png"
#: Outline colours (RGB) in the preview: the label, and the segmenter's prediction.
LABEL_COLOUR, PREDICTION_COLOUR = (255, 64, 64), (64, 220, 255)


# ---- the judging segmenter: trained (or reused) here ---------------------------------


def train(
    cache: Cache,
    cases: Sequence[str],
    out: Path,
    *,
    steps: int = STEPS,
    seed: int = 0,
    device: str = "auto",
    augment: str = "classical",
    note: Callable[[str], None] | None = None,
) -> Segmenter:
    """Train a segmenter on ``cases`` of ``cache`` into ``out/segmenter.pt``, or reuse
    the one there when it trained on the same cases (by content hash), grid and
    settings.

    The judge trains with classical augmentation (affine and elastic moves among them)
    by default: synthesis moves real masks, and a judge that never saw a moved slice
    scores moved real slices as badly as moved synthetic ones (measured:
    ``benchmarks/bench_moves.py``), which would blame the generator for the judge.

    Args:
        cache: an open cache on the pairs' grid.
        cases: the generator's training cases.
        out: the segmenter's folder.
        steps: optimisation steps (batch 16, medaug's default U-Net).
        seed: weights and item draws.
        device: where to train.
        augment: ``classical`` or ``none`` (the judge's own augmentation).
        note: one-line notes.
    """
    if not cases:
        raise ConfigError(
            "no real training cases to train a segmenter on", prefix=f"{cache.root}: "
        )
    cfg = SegmentConfig(steps=steps, seed=seed, device=device, augment=augment)
    others = [c for c in cache.case_ids if c not in set(cases)]
    split = split_record(cache, cases=(list(cases), others))
    path = out / CHECKPOINT
    source = f"trained here on the generator's {len(cases)} training case(s)"
    if path.exists():
        try:
            net, found, pp, found_split = load_segmenter(path, pick_device(device))
            same = (
                found.to_dict() == cfg.to_dict()
                and pp.to_dict() == cache.config.to_dict()
                and found_split.get("train") == split["train"]
            )
        except (MedaugError, KeyError, ValueError, RuntimeError):
            same = False  # damaged or of another kind: trained again
        if same:  # trained on the same cases, grid and settings: reuse it
            return Segmenter(net, found, pp, source, path, len(cases))
    if note is not None:
        note(f"training a segmenter for label fidelity ({steps} steps on {len(cases)} case(s))")
    fitted = fit(cache, list(cases), cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_segmenter(
        path, fitted.net, cfg, cache.config, step=fitted.steps, split=split, synthetic=None
    )
    return Segmenter(fitted.net.eval(), cfg, cache.config, source, path, len(cases))


def judge(
    synth: Synthesizer,
    real: Cache | None,
    folder: Path,
    config: SynthConfig,
    note: Callable[[str], None] | None = None,
) -> Segmenter:
    """The segmenter of a synthesis run's fidelity filter (``synthesize(...,
    judge=judge)``): ``config.segmenter``, checked against the generator's grid and
    target, or one trained on the generator's training cases in ``real`` (kept in
    ``folder`` and reused)."""
    if config.segmenter is not None:
        return load(config.segmenter, synth.config, synth.device)
    if real is None:
        raise ConfigError(
            "{min_fidelity} needs a segmenter: give {segmenter} SEG, or {input} scans to "
            "train one on the generator's training cases"
        )
    cases = training_cases(real, synth.split)
    return train(real, cases, folder, seed=config.seed, device=config.device, note=note)


def measure(
    cache: Any,
    train_ids: Sequence[str],
    held_ids: Sequence[str],
    folder: SynthFolder,
    *,
    segmenter: str | os.PathLike[str] | None = None,
    steps: int = STEPS,
    threshold: float = THRESHOLD,
    seed: int = 0,
    device: str = "auto",
    note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Label fidelity of a synthesis folder, and its real reference; the evaluation
    document's ``fidelity`` block. Writes the worst-pairs preview (:data:`PREVIEW`).

    Args:
        cache: the real cases on the synthetic grid.
        train_ids: the generator's training cases (the segmenter trains on them).
        held_ids: held-out real cases (the reference).
        folder: the synthesis folder.
        segmenter: a ``segmenter.pt`` (or its folder) to use instead of training one.
        steps: training steps when no segmenter is given.
        threshold: pairs below this Dice count as failing.
        seed: the segmenter's training.
        device: where to run.
        note: one-line notes.
    """
    config = cache.config
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"{{threshold}} must be in (0, 1], got {threshold}")
    if segmenter is not None:
        seg = load(segmenter, config, device)
    else:
        seg = train(cache, train_ids, folder.root / FOLDER / "segmenter", steps=steps, seed=seed,
                    device=device, note=note)  # fmt: skip
    note = note or (lambda _msg: None)
    images, labels, names = synthetic_items(folder, config)
    note(f"scoring {len(names)} synthetic pairs with the segmenter (label fidelity)")
    rows, synthetic, pred = score_pairs(seg, images, labels, names, config, threshold)
    doc: dict[str, Any] = {
        "segmenter": seg.describe(),
        "threshold": threshold,
        "unit": "slice" if config.dims == 2 else "volume",
        "synthetic": synthetic,
    }
    if held_ids:
        r_img, r_lab, r_names = real_items(cache, held_ids)
        doc["real_heldout"] = score_pairs(seg, r_img, r_lab, r_names, config, threshold)[1]
        doc["real_heldout"]["cases"] = len(held_ids)
    else:
        doc["real_heldout"] = {
            "skipped": "no held-out real cases (nothing the segmenter did not see)"
        }
    worst = preview(images, labels, pred, rows, folder.root / PREVIEW, config.target_class)
    doc["preview"] = (
        {"file": str(PREVIEW), "cases": worst, "caption": _caption(worst)} if worst else None
    )
    doc["cases"] = rows
    return doc


# ---- the picture and the words -------------------------------------------------------


def preview(
    images: np.ndarray,
    labels: np.ndarray,
    pred: np.ndarray,
    rows: list[dict[str, Any]],
    path: Path,
    target: int = 1,
    n: int = WORST,
) -> list[dict[str, Any]]:
    """Write the worst pairs as a PNG: the label's target outlined red, the
    segmenter's prediction cyan.

    The pairs with the lowest Dice come first; empty-label pairs with the largest
    false-positive volume fill the rest. Volumes show their slice with the most
    label (or predicted) voxels.

    Returns:
        ``[{"case", "dice" | "false_positive_mm"}]`` of the pairs shown, in order
        (empty when there are no pairs; no file is written then).
    """
    from scipy import ndimage

    order = sorted(
        (i for i, r in enumerate(rows) if not r.get("empty_label")), key=lambda i: rows[i]["dice"]
    )
    spare = sorted(
        (i for i, r in enumerate(rows) if r.get("empty_label") and r["predicted_voxels"]),
        key=lambda i: -rows[i]["false_positive_mm"],
    )
    picks = (order + spare)[:n]
    if not picks:
        return []
    scale = max(1, 256 // max(images.shape[1:3]) // 2)
    tiles = []
    for i in picks:
        image, label, mask = images[i], labels[i], pred[i]
        if image.ndim == 3:
            z = int(np.argmax((label > 0).sum(axis=(0, 1)) + (mask > 0).sum(axis=(0, 1))))
            image, label, mask = image[..., z], label[..., z], mask[..., z]
        tile = overlay(image, None, scale=1)
        for mask_xy, colour in ((label == target, LABEL_COLOUR), (mask > 0, PREDICTION_COLOUR)):
            drawn = radiological(mask_xy)
            tile[drawn & ~ndimage.binary_erosion(drawn)] = colour
        tiles.append(np.kron(tile, np.ones((scale, scale, 1), dtype=np.uint8)))
    save_sections([("worst pairs: label red, segmenter cyan", tiles)], path, columns=n)
    shown = []
    for i in picks:
        r = rows[i]
        key = "false_positive_mm" if r.get("empty_label") else "dice"
        shown.append({"case": r["case"], key: r[key]})
    return shown


def _caption(shown: list[dict[str, Any]]) -> str:
    what = ", ".join(
        f"{c['case']} Dice {c['dice']:.2f}"
        if "dice" in c
        else f"{c['case']} false positive {c['false_positive_mm']:g} mm (empty label)"
        for c in shown
    )
    return f"Label outlined red, the segmenter's prediction cyan; left to right: {what}."


__all__ = [
    "PREVIEW",
    "STEPS",
    "judge",
    "measure",
    "preview",
    "train",
]
