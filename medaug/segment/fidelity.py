"""Label fidelity of image-label pairs: does an image show what its label says?

A segmenter (medaug's U-Net, on the pairs' grid) is applied to each image, and its
prediction is scored against the pair's own label: Dice and HD95 per pair. Pairs are
a generator's items (slices for 2D generators, volumes for 3D), or real cached items
(the held-out reference). A generator that draws its layouts from real masks under
random moves has a second yardstick: the real slices those layouts were cut from,
moved alike (:func:`moved_real_items`), which is what a perfect renderer of the
moved layouts would reach; the segmenter loses Dice on moved anatomy whoever drew it.

A pair whose label holds no target has no Dice: it is counted apart, with the
volume the segmenter nevertheless calls target (its false-positive volume, mm² for
slices, mm³ for volumes).

Used by ``medaug segment eval SEG synth/`` (:func:`evaluate_synthetic`), by
``medaug evaluate`` (:mod:`medaug.evaluate.fidelity`, which also trains the
segmenter when none is given) and, through a :class:`Segmenter`, by the synthesis
filter ``--min-fidelity`` (:mod:`medaug.synth.fidelity_filter`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medaug.data.synthfolder import SynthFolder
from medaug.data.warp import warp_pair
from medaug.errors import ConfigError, InputError
from medaug.io.atomic import write_json
from medaug.preprocess.cache import Cache, case_number
from medaug.preprocess.config import PreprocessConfig
from medaug.preprocess.transforms import hu_to_unit
from medaug.segment.config import SegmentConfig
from medaug.segment.metrics import case_metrics, summarize_cases
from medaug.segment.segmenter import CHECKPOINT, load_segmenter
from medaug.train.distributed import pick_device

#: Pairs below this Dice count as failing (their share is reported).
THRESHOLD = 0.5
#: Preprocessing settings a segmenter must share with the pairs it scores.
GRID_FIELDS = ("dims", "grid", "spacing_mm", "hu_window")


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
    config: SegmentConfig
    preprocess: PreprocessConfig
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

    @torch.no_grad()
    def predict(self, images: np.ndarray) -> np.ndarray:
        """The target masks of items in [-1, 1].

        Args:
            images: (N, X, Y) slices or (N, X, Y, Z) volumes in [-1, 1].

        Returns:
            uint8 masks of the same shape (1 = target).
        """
        net = self.net
        device = next(net.parameters()).device
        autocast = device.type == "cuda" and self.config.amp == "auto"
        out = []
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            if images.ndim == 3:
                for s in range(0, len(images), 32):
                    x = torch.from_numpy(np.ascontiguousarray(images[s : s + 32], np.float32))
                    out.append(net(x[:, None].to(device)).float().argmax(1).cpu().numpy())
            else:
                from monai.inferers import sliding_window_inference

                roi = tuple(self.preprocess.grid or images.shape[1:])
                for volume in images:
                    x = torch.from_numpy(np.ascontiguousarray(volume, np.float32))[None, None]
                    logits = sliding_window_inference(
                        x.to(device), roi, sw_batch_size=2, predictor=net,
                        overlap=self.config.sw_overlap, mode="gaussian",
                    )  # fmt: skip
                    out.append(torch.as_tensor(logits).float().argmax(1).cpu().numpy())
        if not out:
            return np.zeros(images.shape, dtype=np.uint8)
        return np.concatenate(out).astype(np.uint8)


# ---- the segmenter: checked and loaded -----------------------------------------------


def check_segmenter(
    seg: PreprocessConfig, data: PreprocessConfig, path: Any, whose: str = "the synthetic cases'"
) -> None:
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
                f"segmenter trained on another grid ({name} {_text(a)} against "
                f"{whose} {_text(b)}); train one on this grid or leave out {{segmenter}}",
                prefix=f"{path}: ",
            )
    if seg.target != data.target or seg.target_class != data.target_class:
        raise ConfigError(
            f"segmenter trained for another target ({seg.target}, label "
            f"{seg.target_class}, against {whose} {data.target}, label {data.target_class})",
            prefix=f"{path}: ",
        )


def _text(value: Any) -> str:
    return "x".join(f"{v:g}" for v in value) if isinstance(value, tuple | list) else str(value)


def load(
    path: str | os.PathLike[str], data_config: PreprocessConfig, device: Any = "cpu"
) -> Segmenter:
    """A ``medaug segment train`` segmenter, checked against the pairs' grid and target."""
    net, cfg, pp, split = load_segmenter(path, device)
    where = Path(path) / CHECKPOINT if Path(path).is_dir() else Path(path)
    check_segmenter(pp, data_config, where)
    train = len(split.get("train", [])) if isinstance(split, dict) else None
    return Segmenter(net, cfg, pp, f"given ({where})", where, train)


# ---- scoring pairs -------------------------------------------------------------------


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
    config: PreprocessConfig,
    threshold: float = THRESHOLD,
) -> tuple[list[dict[str, Any]], dict[str, Any], np.ndarray]:
    """Predict and score pairs: ``(rows, summary, predicted masks)``."""
    pred = seg.predict(images)
    rows = pair_rows(
        pred, labels, names, config.target_class, config.spacing_mm, seg.config.tolerance_mm
    )
    return rows, summarize(rows, threshold), pred


def summary_line(summary: dict[str, Any], threshold: float, unit: str = "slice") -> str:
    """One line for the terminal: fidelity, failing share, empty labels."""
    text = (
        f"label fidelity {_f(summary['dice'])} over {summary['with_target']} pair(s) with a "
        f"label ({_f(summary['below_threshold'], '.0%')} below Dice {threshold:g})"
    )
    if summary["empty_label"]:
        text += (
            f"; {summary['empty_label']} pair(s) with an empty label, "
            f"{_f(summary['empty_with_false_positive'], '.0%')} of them with a false positive "
            f"(mean {_f(summary['false_positive_mm_mean'], '.1f')} "
            f"{'mm²' if unit == 'slice' else 'mm³'})"
        )
    return text


def _f(v: Any, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


# ---- items: synthesis folders and cached real cases ------------------------------------


def check_labels(folder: SynthFolder) -> None:
    """Refuse a synthesis folder whose cases lack their label files."""
    for rec in folder.cases:
        if not rec.get("label") or not (folder.root / rec["label"]).is_file():
            where = folder.root / rec["label"] if rec.get("label") else folder.root / "labels"
            raise InputError(
                where, f"synthetic case {rec['case']} has no label file: nothing to score"
            )


def synthetic_items(
    folder: SynthFolder, config: PreprocessConfig | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every pair of a synthesis folder in [-1, 1]: slices of a 2D generator's cases
    (``synth_0003`` for a one-slice case, ``synth_0003/z05`` for a slice of a stack),
    volumes of a 3D one.

    Args:
        folder: the synthesis folder.
        config: the grid's ``PreprocessConfig`` (default the folder's own).

    Returns:
        ``(images, labels, names)``: (N, X, Y) or (N, X, Y, Z) arrays and N names.
    """
    config = config or folder.config
    check_labels(folder)
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    names: list[str] = []
    for rec in folder.cases:
        hu, label = folder.read_case(rec)
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


def real_items(cache: Cache, case_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
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


def moved_reals(cache: Cache, layouts: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """The real slices 2D real-mask layout plans (``RealMasks.plan``) were cut from,
    each moved by its own plan's moves: ``(images, labels)``, (N, X, Y) each.

    Each item shows real anatomy exactly where its plan's layout puts the target (the
    label comes out equal to the layout's target), so a segmenter's Dice on them is the
    label fidelity a perfect renderer of the same moved layouts would reach.

    Raises:
        ConfigError: a plan that is not one moved real slice of ``cache``.
    """
    by_number = {case_number(c): c for c in cache.case_ids}
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for plan in layouts:
        case = by_number.get(plan.get("source", -1))
        if plan.get("masks") != "real" or "slice" not in plan or case is None:
            raise ConfigError(
                f"{cache.root}: layout {plan} is not one moved real slice of this cache"
            )
        z = int(plan["slice"])
        item = {
            "image": torch.from_numpy(np.array(cache.array(case, "image")[z], np.float32))[None],
            "label": torch.from_numpy(np.array(cache.array(case, "label")[z], np.uint8))[None],
        }
        moved = warp_pair(item, cache.config.spacing_mm, plan)
        images.append(moved["image"][0].numpy())
        labels.append(moved["label"][0].numpy())
    return np.stack(images), np.stack(labels)


def moved_real_items(folder: SynthFolder, cache: Cache) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:func:`moved_reals` for every pair of a 2D synthesis folder drawn on ``real``
    masks (its manifest's ``params.layout``), named as the pairs are: the control
    beside the folder's label fidelity.

    Raises:
        ConfigError: a case that is not one moved real slice of ``cache`` (another
            mask source, a stack, a 3D generator).
    """
    plans, names = [], []
    for rec in folder.cases:
        plan = (rec.get("params") or {}).get("layout") or {}
        if plan.get("masks") != "real" or "slice" not in plan:
            raise ConfigError(
                f"{folder.root}: synthetic case {rec['case']} is not one moved real slice; "
                "the moved real control needs a 2D generator drawing on 'real' masks"
            )
        plans.append(plan)
        names.append(rec["case"])
    images, labels = moved_reals(cache, plans)
    return images, labels, names


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
    note = on_event or (lambda _msg: None)
    model = Path(model)
    folder = SynthFolder.open(synth_dir)
    config = folder.config
    seg = load(model, config, pick_device(device))
    images, labels, names = synthetic_items(folder, config)
    note(f"scoring {len(names)} synthetic pairs against their own labels")
    rows, summary, _ = score_pairs(seg, images, labels, names, config, threshold)
    scored = [r for r in rows if not r.get("empty_label")]
    if not scored:
        raise InputError(
            folder.root,
            f"none of the {len(rows)} synthetic pairs has a {config.target} label: "
            "nothing to score Dice on",
        )
    doc = {
        "model": str(model),
        "synthetic": str(folder.root),
        "unit": "slice" if config.dims == 2 else "volume",
        "threshold": threshold,
        "cases": scored,
        "skipped_without_target": len(rows) - len(scored),
        **summarize_cases(scored),
        "fidelity": summary,
        "empty_label_cases": [r for r in rows if r.get("empty_label")],
    }
    where = Path(out) if out is not None else (model if model.is_dir() else model.parent)
    write_json(where / "evaluation.json", doc)
    return doc


__all__ = [
    "THRESHOLD",
    "Segmenter",
    "check_labels",
    "check_segmenter",
    "evaluate_synthetic",
    "load",
    "pair_rows",
    "real_items",
    "score_pairs",
    "summarize",
    "summary_line",
    "synthetic_items",
]
