"""Label fidelity: does a synthetic image show what its label says?

A segmenter trained on the generator's own training cases (medaug's U-Net, same
grid) is applied to each synthetic image, and its prediction is scored against the
synthetic label: Dice and HD95 per pair. The same segmenter scored the same way on
held-out real items is the reference a perfect generator would reach. Pairs are
the generator's items (slices for 2D generators, volumes for 3D).

A pair whose label holds no target has no Dice: it is counted apart, with the
volume the segmenter nevertheless calls target (its false-positive volume, mm² for
slices, mm³ for volumes).

Used by ``medaug evaluate`` (:func:`measure`), ``medaug segment eval SEG synth/``
(:func:`evaluate_synthetic`) and the synthesis filter ``--min-fidelity``
(:mod:`medaug.synth.fidelity_filter`); :mod:`medaug.evaluate.verdict` puts the
numbers into words for the report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medaug.errors import ConfigError, InputError

#: Pairs below this Dice count as failing (their share is reported).
THRESHOLD = 0.5
#: Steps of the segmenter evaluate trains when none is given.
STEPS = 300
#: Pairs shown in the worst-pairs preview.
WORST = 8
#: Where evaluate keeps its segmenter and the preview, under the synthesis folder.
FOLDER = Path("evaluation")
PREVIEW = FOLDER / "fidelity-worst.png"
#: Preprocessing settings a segmenter must share with the pairs it scores.
GRID_FIELDS = ("dims", "grid", "spacing_mm", "hu_window")
#: Outline colours (RGB) in the preview: the label, and the segmenter's prediction.
LABEL_COLOUR, PREDICTION_COLOUR = (255, 64, 64), (64, 220, 255)


@dataclass
class Segmenter:
    """A segmenter ready to score pairs.

    Attributes:
        net: the U-Net, in eval mode.
        config: its ``SegmentConfig``.
        preprocess: the ``PreprocessConfig`` of the grid it was trained on.
        source: what it is, in words (for the report and the manifest).
        path: its ``segmenter.pt``.
        train_cases: how many real cases it trained on (None when not recorded).
    """

    net: torch.nn.Module
    config: Any
    preprocess: Any
    source: str
    path: Path
    train_cases: int | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "path": str(self.path),
            "steps": self.config.steps,
            "train_cases": self.train_cases,
            "net": f"MONAI UNet {list(self.config.channels)}, DiceCE",
        }


# ---- the segmenter: checked, loaded or trained ---------------------------------------


def check_segmenter(seg: Any, data: Any, path: Any, whose: str = "the synthetic cases'") -> None:
    """Refuse a segmenter trained on another grid or for another target.

    Args:
        seg: the segmenter's ``PreprocessConfig``.
        data: the ``PreprocessConfig`` of the pairs it is to score.
        path: the segmenter's file, for the message.
        whose: whose grid ``data`` is, for the message.

    Raises:
        ConfigError: one line naming ``path`` and the first setting that differs.
    """
    for name in GRID_FIELDS:
        a, b = getattr(seg, name), getattr(data, name)
        if (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b):
            raise ConfigError(
                f"{path}: segmenter trained on another grid ({name} {_text(a)} against "
                f"{whose} {_text(b)}); train one on this grid or leave out --segmenter"
            )
    if seg.target != data.target or seg.target_class != data.target_class:
        raise ConfigError(
            f"{path}: segmenter trained for another target ({seg.target}, label "
            f"{seg.target_class}, against {whose} {data.target}, label {data.target_class})"
        )


def _text(value: Any) -> str:
    return "x".join(f"{v:g}" for v in value) if isinstance(value, tuple | list) else str(value)


def load(path: str | os.PathLike[str], data_config: Any, device: Any = "cpu") -> Segmenter:
    """A ``medaug segment train`` segmenter, checked against the pairs' grid and target."""
    from medaug.segment.train import CHECKPOINT, load_segmenter

    net, cfg, pp, split = load_segmenter(path, device)
    where = Path(path) / CHECKPOINT if Path(path).is_dir() else Path(path)
    check_segmenter(pp, data_config, where)
    train = len(split.get("train", [])) if isinstance(split, dict) else None
    return Segmenter(net, cfg, pp, f"given ({where})", where, train)


def train(
    cache: Any,
    cases: Sequence[str],
    out: Path,
    *,
    steps: int = STEPS,
    seed: int = 0,
    device: str = "auto",
    note: Callable[[str], None] | None = None,
) -> Segmenter:
    """Train a segmenter on ``cases`` of ``cache`` into ``out/segmenter.pt``, or reuse
    the one there when it trained on the same cases (by content hash), steps and seed.

    Args:
        cache: an open cache on the pairs' grid.
        cases: the generator's training cases.
        out: the segmenter's folder.
        steps: optimisation steps (batch 16, medaug's default U-Net).
        seed: weights and item draws.
        device: where to train.
        note: one-line notes.
    """
    import medaug
    from medaug.data.splits import split_record
    from medaug.io.atomic import atomic_path
    from medaug.segment.config import SegmentConfig
    from medaug.segment.train import CHECKPOINT, fit, load_segmenter
    from medaug.train.checkpoint import load_checkpoint
    from medaug.train.distributed import pick_device

    if not cases:
        raise ConfigError(f"{cache.root}: no real training cases to train a segmenter on")
    cfg = SegmentConfig(steps=steps, seed=seed, device=device)
    others = [c for c in cache.case_ids if c not in set(cases)]
    split = split_record(cache, cases=(list(cases), others))
    path = out / CHECKPOINT
    source = f"trained here on the generator's {len(cases)} training case(s)"
    if path.exists():
        made = {
            "split": json.dumps(split["train"]),
            "segment_config": json.dumps(cfg.to_dict()),
            "preprocess_config": json.dumps(cache.config.to_dict()),
        }
        try:
            state = load_checkpoint(path, kind="segmenter")
            found = {k: state[k] for k in made}
            found["split"] = json.dumps(json.loads(found["split"])["train"])
        except (InputError, KeyError, ValueError):
            found = {}
        if found == made:  # trained on the same cases, grid and settings: reuse it
            net, cfg, pp, _ = load_segmenter(path, pick_device(device))
            return Segmenter(net, cfg, pp, source, path, len(cases))
    if note is not None:
        note(f"training a segmenter for label fidelity ({steps} steps on {len(cases)} case(s))")
    fitted = fit(cache, list(cases), cfg)
    state = {
        "format": 1,
        "kind": "segmenter",
        "medaug_version": medaug.__version__,
        "step": fitted.steps,
        "segment_config": json.dumps(cfg.to_dict()),
        "preprocess_config": json.dumps(cache.config.to_dict()),
        "split": json.dumps(split),
        "synthetic": json.dumps(None),
        "model": {k: v.detach().cpu() for k, v in fitted.net.state_dict().items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Segmenter(fitted.net.eval(), cfg, cache.config, source, path, len(cases))


# ---- scoring pairs -------------------------------------------------------------------


@torch.no_grad()
def predict(seg: Segmenter, images: np.ndarray) -> np.ndarray:
    """The segmenter's target masks of items in [-1, 1].

    Args:
        seg: the segmenter.
        images: (N, X, Y) slices or (N, X, Y, Z) volumes in [-1, 1].

    Returns:
        uint8 masks of the same shape (1 = target).
    """
    net = seg.net
    device = next(net.parameters()).device
    autocast = device.type == "cuda" and seg.config.amp == "auto"
    out = []
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        if images.ndim == 3:
            for s in range(0, len(images), 32):
                x = torch.from_numpy(np.ascontiguousarray(images[s : s + 32], np.float32))
                out.append(net(x[:, None].to(device)).float().argmax(1).cpu().numpy())
        else:
            from monai.inferers import sliding_window_inference

            roi = tuple(seg.preprocess.grid or images.shape[1:])
            for volume in images:
                x = torch.from_numpy(np.ascontiguousarray(volume, np.float32))[None, None]
                logits = sliding_window_inference(
                    x.to(device), roi, sw_batch_size=2, predictor=net,
                    overlap=seg.config.sw_overlap, mode="gaussian",
                )  # fmt: skip
                out.append(torch.as_tensor(logits).float().argmax(1).cpu().numpy())
    if not out:
        return np.zeros(images.shape, dtype=np.uint8)
    return np.concatenate(out).astype(np.uint8)


def pair_rows(
    pred: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    target: int,
    spacing: Sequence[float],
    tolerance_mm: float = 2.0,
) -> list[dict[str, Any]]:
    """Per-pair scores of predicted target masks against the pairs' labels.

    Args:
        pred: (N, ...) predicted target masks.
        labels: (N, ...) class maps (the pairs' labels).
        names: one name per pair.
        target: the target's label value.
        spacing: voxel size (mm) of the items' axes ((x, y) for slices).
        tolerance_mm: surface Dice tolerance.

    Returns:
        one dict per pair: ``case``, and either ``dice``, ``hd95_mm``,
        ``surface_dice``, ``target_voxels``, ``predicted_voxels`` (label with target)
        or ``empty_label: True``, ``predicted_voxels``, ``false_positive_mm``.
    """
    from medaug.segment.evaluate import case_metrics

    dims = pred.ndim - 1
    voxel = float(np.prod(spacing[:dims]))
    rows = []
    for p, lab, name in zip(pred, labels, names, strict=True):
        truth = lab == target
        if truth.any():
            rows.append({"case": name, **case_metrics(p, truth, spacing[:dims], tolerance_mm)})
        else:
            n = int(np.count_nonzero(p))
            rows.append(
                {
                    "case": name,
                    "empty_label": True,
                    "predicted_voxels": n,
                    "false_positive_mm": round(n * voxel, 2),
                }
            )
    return rows


def summarize(rows: list[dict[str, Any]], threshold: float = THRESHOLD) -> dict[str, Any]:
    """Fidelity over pairs: Dice over pairs whose label holds the target; the share
    below ``threshold``; HD95 where defined; empty-label pairs apart."""
    scored = [r for r in rows if not r.get("empty_label")]
    empty = [r for r in rows if r.get("empty_label")]
    dice = np.array([r["dice"] for r in scored], dtype=np.float64)
    hd = [r["hd95_mm"] for r in scored if r["hd95_mm"] is not None]
    fp = np.array([r["false_positive_mm"] for r in empty], dtype=np.float64)
    return {
        "pairs": len(rows),
        "with_target": len(scored),
        "dice": round(float(dice.mean()), 5) if dice.size else None,
        "dice_median": round(float(np.median(dice)), 5) if dice.size else None,
        "below_threshold": round(float((dice < threshold).mean()), 5) if dice.size else None,
        "hd95_mm": round(float(np.mean(hd)), 3) if hd else None,
        "missed": sum(r["predicted_voxels"] == 0 for r in scored),
        "empty_label": len(empty),
        "empty_fraction": round(len(empty) / len(rows), 5) if rows else None,
        "false_positive_mm_mean": round(float(fp.mean()), 2) if fp.size else None,
        "empty_with_false_positive": round(float((fp > 0).mean()), 5) if fp.size else None,
    }


def score_pairs(
    seg: Segmenter,
    images: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    config: Any,
    threshold: float = THRESHOLD,
) -> tuple[list[dict[str, Any]], dict[str, Any], np.ndarray]:
    """Predict and score pairs: ``(rows, summary, predicted masks)``."""
    pred = predict(seg, images)
    rows = pair_rows(
        pred, labels, names, config.target_class, config.spacing_mm, seg.config.tolerance_mm
    )
    return rows, summarize(rows, threshold), pred


# ---- synthesis folders ---------------------------------------------------------------


def check_labels(synth_dir: Path, manifest: dict[str, Any]) -> None:
    """Refuse a synthesis folder whose cases lack their label files."""
    for rec in manifest["cases"]:
        if not rec.get("label") or not (synth_dir / rec["label"]).is_file():
            where = synth_dir / rec["label"] if rec.get("label") else synth_dir / "labels"
            raise InputError(
                where, f"synthetic case {rec['case']} has no label file: nothing to score"
            )


def synthetic_items(
    synth_dir: Path, manifest: dict[str, Any], config: Any
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every pair of a synthesis folder in [-1, 1]: slices of a 2D generator's cases
    (``synth_0003`` for a one-slice case, ``synth_0003/z05`` for a slice of a stack),
    volumes of a 3D one.

    Returns:
        ``(images, labels, names)``: (N, X, Y) or (N, X, Y, Z) arrays and N names.
    """
    from medaug.preprocess.transforms import hu_to_unit
    from medaug.synth.output import read_case

    check_labels(synth_dir, manifest)
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    names: list[str] = []
    for rec in manifest["cases"]:
        hu, label = read_case(synth_dir, rec)
        image = hu_to_unit(hu, config.hu_window).astype(np.float32)
        if config.dims == 2:
            depth = image.shape[-1]
            images.extend(np.moveaxis(image, -1, 0))
            labels.extend(np.moveaxis(label, -1, 0))
            names += (
                [rec["case"]] if depth == 1 else [f"{rec['case']}/z{z:02d}" for z in range(depth)]
            )
        else:
            images.append(image)
            labels.append(label)
            names.append(rec["case"])
    return np.stack(images), np.stack(labels), names


def real_items(cache: Any, case_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The items of real cached cases, named ``case_0003/z05`` (slices) or
    ``case_0003`` (volumes)."""
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    names: list[str] = []
    for c in case_ids:
        image = np.asarray(cache.array(c, "image"), dtype=np.float32)  # (Z, X, Y)
        label = np.asarray(cache.array(c, "label"))
        if cache.config.dims == 2:
            images.extend(image)
            labels.extend(label)
            names += [f"{c}/z{z:02d}" for z in range(len(image))]
        else:
            images.append(np.moveaxis(image, 0, -1))
            labels.append(np.moveaxis(label, 0, -1))
            names.append(c)
    return np.stack(images), np.stack(labels), names


def measure(
    cache: Any,
    train_ids: Sequence[str],
    held_ids: Sequence[str],
    synth_dir: Path,
    manifest: dict[str, Any],
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
        synth_dir: the synthesis folder.
        manifest: its manifest.
        segmenter: a ``segmenter.pt`` (or its folder) to use instead of training one.
        steps: training steps when no segmenter is given.
        threshold: pairs below this Dice count as failing.
        seed: the segmenter's training.
        device: where to run.
        note: one-line notes.
    """
    config = cache.config
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"the fidelity threshold must be in (0, 1], got {threshold}")
    if segmenter is not None:
        seg = load(segmenter, config, device)
    else:
        seg = train(cache, train_ids, synth_dir / FOLDER / "segmenter", steps=steps, seed=seed,
                    device=device, note=note)  # fmt: skip
    note = note or (lambda _msg: None)
    images, labels, names = synthetic_items(synth_dir, manifest, config)
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
    worst = preview(images, labels, pred, rows, synth_dir / PREVIEW, config.target_class)
    doc["preview"] = (
        {"file": str(PREVIEW), "cases": worst, "caption": _caption(worst)} if worst else None
    )
    doc["cases"] = rows
    return doc


def evaluate_synthetic(
    model: str | os.PathLike[str],
    synth_dir: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    device: str = "auto",
    threshold: float = THRESHOLD,
    on_event: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``medaug segment eval SEG synth/``: each synthetic pair scored against its own
    label, in the form of :func:`medaug.segment.evaluate.score` (``cases`` with
    Dice, HD95, surface Dice; their means), with empty-label pairs apart.

    Args:
        model: ``segmenter.pt`` or its folder.
        synth_dir: a ``medaug synth`` folder.
        out: where ``evaluation.json`` goes (default the model's folder).
        device: where to run.
        threshold: pairs below this Dice count as failing.
        on_event: one-line notes.

    Raises:
        InputError: a case without its label, or no pair with the target at all.
        ConfigError: a segmenter of another grid or target.
    """
    from medaug.io.atomic import write_json
    from medaug.preprocess import PreprocessConfig
    from medaug.synth.output import read_manifest
    from medaug.train.distributed import pick_device

    note = on_event or (lambda _msg: None)
    synth_dir, model = Path(synth_dir), Path(model)
    manifest = read_manifest(synth_dir)
    config = PreprocessConfig.from_dict(
        manifest["preprocess_config"], source=str(synth_dir / "manifest.json")
    )
    seg = load(model, config, pick_device(device))
    images, labels, names = synthetic_items(synth_dir, manifest, config)
    note(f"scoring {len(names)} synthetic pairs against their own labels")
    rows, summary, _ = score_pairs(seg, images, labels, names, config, threshold)
    scored = [r for r in rows if not r.get("empty_label")]
    if not scored:
        raise InputError(
            synth_dir,
            f"none of the {len(rows)} synthetic pairs has a {config.target} label: "
            "nothing to score Dice on",
        )
    from medaug.segment.evaluate import summarize_cases

    doc = {
        "model": str(model),
        "synthetic": str(synth_dir),
        "unit": "slice" if config.dims == 2 else "volume",
        "threshold": threshold,
        "cases": scored,
        "skipped_without_target": len(rows) - len(scored),
        **summarize_cases(scored),
        "fidelity": summary,
        "empty_label_cases": [r for r in rows if r.get("empty_label")],
    }
    folder = Path(out) if out is not None else (model if model.is_dir() else model.parent)
    write_json(folder / "evaluation.json", doc)
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

    from medaug.report import overlay, radiological, save_sections

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
    "THRESHOLD",
    "Segmenter",
    "check_labels",
    "check_segmenter",
    "evaluate_synthetic",
    "load",
    "measure",
    "pair_rows",
    "predict",
    "preview",
    "real_items",
    "score_pairs",
    "summarize",
    "synthetic_items",
    "train",
]
