"""The segmentation config: the U-Net, its training and how it is scored; saved in
every segmenter checkpoint and in ``gain.json``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from medaug.errors import ConfigError
from medaug.settings import Settings

AUGMENTS = ("none", "classical")


@dataclass(frozen=True)
class SegmentConfig(Settings):
    """Settings of one segmentation training run (MONAI ``UNet``, DiceCE loss)."""

    SOURCE: ClassVar[str] = "segment config"

    steps: int = 500  # optimisation steps; the gain experiment's arms all run this many
    batch_size: int = 16  # items per step (slices in 2D, volumes in 3D)
    lr: float = 1e-3  # Adam learning rate, decayed polynomially (power 0.9) to 0, as nnU-Net
    weight_decay: float = 1e-5  # Adam weight decay
    channels: tuple[int, ...] = (16, 32, 64, 128)  # U-Net channels per level
    strides: tuple[int, ...] = (2, 2, 2)  # downsampling between levels
    res_units: int = 2  # residual units per level (MONAI UNet num_res_units)
    augment: str = "none"  # none | classical (MONAI affine, elastic, intensity, noise)
    ratio: float = 0.0  # expected share of synthetic items in a batch, in [0, 1)
    synthetic_only: bool = False  # train on synthetic items alone (an optional gain arm)
    target_fraction: float = 0.5  # 2D: share of real slices drawn that hold the target
    seed: int = 0  # initial weights, item draws and augmentation all follow from it
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto: bf16 autocast on CUDA, off on the CPU | off
    workers: int = 0  # DataLoader worker processes
    tolerance_mm: float = 2.0  # surface Dice: boundary distances within this count as agreeing
    sw_overlap: float = 0.25  # 3D: sliding-window overlap at inference
    log_every: int = 50  # steps between loss records

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.augment not in AUGMENTS:
            raise ConfigError(f"augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        if not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"--ratio must be in [0, 1), got {self.ratio}")
        if len(self.strides) != len(self.channels) - 1:
            raise ConfigError("strides must have one entry fewer than channels")
        if self.lr <= 0 or self.tolerance_mm <= 0 or self.workers < 0:
            raise ConfigError("lr and tolerance_mm must be > 0, workers >= 0")
        if self.amp not in ("auto", "off"):
            raise ConfigError(f"amp must be auto or off, got {self.amp!r}")
        if not 0.0 <= self.target_fraction <= 1.0:
            raise ConfigError(f"target_fraction must be in [0, 1], got {self.target_fraction}")


__all__ = ["AUGMENTS", "SegmentConfig"]
