"""Training a MONAI U-Net to segment the target structure, on real items, synthetic
items, or a mixture of both.

``fit`` is the loop (in memory, no files); ``train_segmenter`` is the command: it
opens or makes the cache, fits, writes ``segmenter.pt`` and ``training.json``, and
scores the held-out side of the split. Every step draws its items by index from a
:class:`~medaug.data.synthetic.MixedDataset` seeded by the run's seed, so two runs
with the same seed start from the same weights and see the same real items in the
same order wherever their synthetic shares agree; the gain experiment's arms differ
only in what they were asked to differ in.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import medaug
from medaug.data.datasets import SliceDataset, VolumeDataset
from medaug.data.synthetic import MixedDataset, SyntheticDataset, check_compatible
from medaug.errors import ConfigError
from medaug.io.atomic import write_json
from medaug.preprocess.splits import split_record
from medaug.segment.augment import classical
from medaug.segment.config import SegmentConfig
from medaug.segment.evaluate import score, scores_text
from medaug.segment.segmenter import (
    CHECKPOINT,
    build_unet,
    data_cache,
    load_segmenter,
    save_segmenter,
)
from medaug.train.distributed import pick_device


@dataclass
class Fitted:
    """A trained segmenter and what its training saw.

    Attributes:
        net: the U-Net, in eval mode.
        steps: optimisation steps run.
        items_real / items_synthetic: items drawn from each side.
        losses: ``(step, mean DiceCE loss since the previous record)`` pairs.
        seconds: wall time of the loop.
    """

    net: torch.nn.Module
    steps: int
    items_real: int
    items_synthetic: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0


def real_dataset(cache: Any, cases: Sequence[str]):
    """The real items of ``cases``: slices (context 0) or volumes, and the 2D sampling
    weights that draw target-bearing slices ``target_fraction`` of the time."""
    if cache.config.dims == 2:
        return SliceDataset(cache, list(cases), context=0)
    return VolumeDataset(cache, list(cases))


class _Binary:
    """Label -> 1 where it holds the target class, else 0 (multi-class maps included)."""

    def __init__(self, target: int):
        self.target = target

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        return {**item, "label": (item["label"] == self.target).float()}


def fit(
    cache: Any,
    cases: Sequence[str],
    cfg: SegmentConfig,
    synthetic: Any = None,
    on_log: Callable[[int, float], None] | None = None,
) -> Fitted:
    """Train a U-Net on the real ``cases`` of ``cache`` (and ``synthetic`` items).

    Args:
        cache: an open :class:`~medaug.data.Cache` (its grid and target).
        cases: the real training case ids.
        cfg: steps, batch, augmentation, synthetic ratio, seed, device.
        synthetic: a :class:`~medaug.data.SyntheticDataset` with ``intensity="unit"``;
            needed when ``cfg.ratio > 0`` or ``cfg.synthetic_only``.
        on_log: called with (step, mean loss) every ``cfg.log_every`` steps.

    Returns:
        the trained net and how many real and synthetic items it saw.
    """
    from monai.losses import DiceCELoss
    from monai.transforms import Compose
    from torch.utils.data import DataLoader

    if (cfg.ratio > 0 or cfg.synthetic_only) and synthetic is None:
        raise ConfigError("a synthetic ratio above 0 needs {synthetic} items")
    device = pick_device(cfg.device)
    dims = cache.config.dims
    real = real_dataset(cache, cases)
    if len(real) == 0:
        raise ConfigError(f"{cache.root}: no training items in the {len(cases)} case(s)")
    weights = real.sample_weights(cfg.target_fraction) if dims == 2 else None
    steps_items = cfg.steps * cfg.batch_size
    transforms: list[Any] = [_Binary(cache.config.target_class)]
    if cfg.augment == "classical":
        transforms.append(classical(dims))
    ratio = 1.0 if cfg.synthetic_only else cfg.ratio
    if ratio > 0:
        check_compatible(real, synthetic)
    data = MixedDataset(
        real, synthetic if ratio > 0 else None, ratio, length=steps_items, seed=cfg.seed,
        real_weights=weights, transform=Compose(transforms),
    )  # fmt: skip
    loader = DataLoader(
        data, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers,
        persistent_workers=False, pin_memory=device.type == "cuda",
    )  # fmt: skip

    torch.manual_seed(cfg.seed)
    net = build_unet(cfg, dims).to(device)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=cfg.steps, power=0.9)
    autocast = device.type == "cuda" and cfg.amp == "auto"
    n_synth, n_real, losses = 0, 0, []
    running, counted = torch.zeros((), device=device), 0
    t0 = time.perf_counter()
    net.train()
    for step, batch in enumerate(loader, start=1):
        x = torch.as_tensor(batch["image"]).to(device, non_blocking=True)
        y = torch.as_tensor(batch["label"]).to(device, non_blocking=True)
        synth_items = int(batch["synthetic"].sum())
        n_synth += synth_items
        n_real += len(x) - synth_items
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.detach()
        counted += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            mean = float(running) / counted  # the only host-device sync
            losses.append((step, mean))
            if on_log is not None:
                on_log(step, mean)
            running, counted = torch.zeros((), device=device), 0
    net.eval()
    return Fitted(net, cfg.steps, n_real, n_synth, losses, time.perf_counter() - t0)


@dataclass
class SegmentResult:
    """What ``train_segmenter`` wrote.

    Attributes:
        out: the output folder.
        checkpoint: ``out/segmenter.pt``.
        fitted: the trained net and its counts.
        evaluation: scores on the held-out side of the split (None when empty).
    """

    out: Path
    checkpoint: Path
    fitted: Fitted
    evaluation: dict[str, Any] | None

    def summary(self) -> str:
        f = self.fitted
        lines = [
            f"Trained {f.steps} steps in {f.seconds:.0f} s: {f.items_real} real and "
            f"{f.items_synthetic} synthetic items"
        ]
        if self.evaluation is not None:
            lines.append(scores_text(self.evaluation, "held-out cases"))
        lines.append(f"  segmenter -> {self.checkpoint}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint), "evaluation": self.evaluation}


def train_segmenter(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config: SegmentConfig | None = None,
    synthetic: str | os.PathLike[str] | None = None,
    dims: int | None = None,
    fold: int = 0,
    on_log: Callable[[int, float], None] | None = None,
    on_event: Callable[[str], None] | None = None,
) -> SegmentResult:
    """Train a segmenter on a cache (or scans, preprocessed first) and score it.

    Args:
        data: a cache from ``medaug preprocess`` or a folder of labelled scans.
        out: output folder: ``segmenter.pt``, ``training.json``, ``evaluation.json``.
        config: the run's settings (default ``SegmentConfig()``).
        synthetic: a ``medaug synth`` folder mixed in at ``config.ratio``.
        dims: 2 or 3 when ``data`` are scans (default 2); must match a cache.
        fold: the split of the cache's ``splits.json``: trains on its training side,
            scores its held-out side.
        on_log: (step, loss) records.
        on_event: one-line notes.

    Returns:
        the written files and the held-out scores.
    """
    cfg = config or SegmentConfig()
    out = Path(out)
    note = on_event or (lambda _msg: None)
    cache = data_cache(data, out / "cache", dims, note)
    train_cases, val_cases = cache.split(fold)
    synth = None
    if synthetic is not None:
        if cfg.ratio == 0 and not cfg.synthetic_only:
            raise ConfigError("{synthetic} given with {ratio} 0: set a ratio in (0, 1)")
        synth = SyntheticDataset(synthetic, intensity="unit")
    elif cfg.ratio > 0:
        raise ConfigError("{ratio} above 0 needs {synthetic} (a synthesis folder)")
    note(f"training on {len(train_cases)} case(s), scoring {len(val_cases)} held-out case(s)")
    fitted = fit(cache, train_cases, cfg, synth, on_log)

    out.mkdir(parents=True, exist_ok=True)
    path = save_segmenter(
        out / CHECKPOINT, fitted.net, cfg, cache.config, step=fitted.steps,
        split=split_record(cache, fold), synthetic=_synthetic_info(synth),
    )  # fmt: skip
    write_json(
        out / "training.json",
        {
            "medaug_version": medaug.__version__,
            "config": cfg.to_dict(),
            "steps": fitted.steps,
            "items_real": fitted.items_real,
            "items_synthetic": fitted.items_synthetic,
            "seconds": round(fitted.seconds, 2),
            "losses": fitted.losses,
            "train_cases": train_cases,
            "synthetic": _synthetic_info(synth),
        },
    )
    evaluation = None
    if val_cases:
        evaluation = score(fitted.net, cache, val_cases, cfg)
        write_json(out / "evaluation.json", evaluation)
    return SegmentResult(out, path, fitted, evaluation)


def _synthetic_info(synth: Any) -> dict[str, Any] | None:
    if synth is None:
        return None
    ckpt = synth.manifest.get("checkpoint", {})
    return {"cases": len(synth.cases), "items": len(synth), "checkpoint_sha256": ckpt.get("sha256")}


# CHECKPOINT, build_unet, data_cache and load_segmenter are defined in
# segment/segmenter.py and stay importable from here as before.
__all__ = [
    "CHECKPOINT",
    "Fitted",
    "SegmentResult",
    "build_unet",
    "data_cache",
    "fit",
    "load_segmenter",
    "real_dataset",
    "train_segmenter",
]
