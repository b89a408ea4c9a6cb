"""The training config: how long, how fast, on what; saved in every run folder and
checkpoint next to the model config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from medaug.errors import ConfigError
from medaug.settings import Settings

#: The global batch when none is asked for, if the training set holds that many items.
DEFAULT_BATCH = 16


@dataclass(frozen=True)
class TrainConfig(Settings):
    """Settings of one training run (the model's own settings are in ``ModelConfig``)."""

    SOURCE: ClassVar[str] = "train config"

    steps: int = 2000  # optimisation steps; one step runs every phase once
    epochs: float | None = None  # instead of steps: passes over the training split
    # global batch, split evenly over data-parallel processes; None: DEFAULT_BATCH (16),
    # or fewer when the training set is smaller (said in the log; see default_batch)
    batch_size: int | None = None
    lr: float = 2e-4  # Adam learning rate of the generator side (encoder, decoder)
    lr_d: float = 2e-4  # Adam learning rate of discriminators and critics
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas; beta1 0.5 steadies GANs
    warmup_steps: int = 100  # linear learning-rate warm-up from 0
    grad_clip: float = 10.0  # max gradient norm per phase (0: off)
    ema_decay: float = 0.999  # EMA of the weights used for samples (0: off)
    seed: int = 0  # initial weights, batches and noise all follow from it
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = (
        "auto"  # auto (bf16 on CUDA, fp16 + scaler without bf16, off on CPU) | bf16 | fp16 | off
    )
    fold: int = 0  # which patient split of the cache to train on
    workers: int = 0  # DataLoader worker processes
    log_every: int = 25  # steps between stats lines (the only host-device syncs)
    sample_every: int = 500  # steps between sample grids (PNG)
    checkpoint_every: int = 500  # steps between checkpoints
    keep_checkpoints: int = 2  # newest checkpoints kept per run
    n_samples: int = 16  # tiles in a sample grid
    collapse_steps: int = 500  # discriminator accuracy >= 0.99 this long: warn
    # move each training pair (image, label, context together) by its own random draw
    # of the moves real-mask synthesis makes (medaug/data/warp.py), so a mask-conditioned
    # generator learns the moved layouts it is asked to render
    warp: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.betas, tuple) or len(self.betas) != 2:
            raise ConfigError(f"betas must be two numbers, got {self.betas!r}")
        positive = ("steps", "batch_size", "log_every", "sample_every", "checkpoint_every")
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"epochs must be > 0, got {self.epochs}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ConfigError(f"amp must be auto, bf16, fp16 or off, got {self.amp!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.lr <= 0 or self.lr_d <= 0:
            raise ConfigError("learning rates must be > 0")
        if self.keep_checkpoints < 1 or self.workers < 0 or self.warmup_steps < 0:
            raise ConfigError("keep_checkpoints >= 1, workers >= 0 and warmup_steps >= 0")


def default_batch(items: int, world: int, unit: str) -> tuple[int, str | None]:
    """The global batch of a run that asked for none, and a note when it is not
    :data:`DEFAULT_BATCH`.

    Many first runs are on one to three scans, fewer volumes than the default batch:
    the batch shrinks to the training set (a multiple of the processes) instead of
    failing, and says so. A batch asked for explicitly is never changed.

    Args:
        items: training items (slices or volumes).
        world: data-parallel processes (the batch splits evenly over them).
        unit: what an item is, plural (``slices``, ``volumes``).

    Returns:
        ``(batch, note)``; ``note`` is None when the default fits as it is.

    Raises:
        ConfigError: fewer items than processes.
    """
    what = f"{items} {unit[:-1] if items == 1 else unit}"
    batch = min(DEFAULT_BATCH, items)
    batch -= batch % world
    if batch < 1:
        raise ConfigError(
            f"the training set has {what}, fewer than the {world} processes: "
            "train on fewer processes"
        )
    if batch == DEFAULT_BATCH:
        return batch, None
    reasons = []
    if items < DEFAULT_BATCH:
        reasons.append(f"the training set has {what}")
    if batch < min(DEFAULT_BATCH, items):
        reasons.append(f"it splits evenly over {world} processes")
    return batch, f"batch {batch}: {' and '.join(reasons)} (default {DEFAULT_BATCH})"
