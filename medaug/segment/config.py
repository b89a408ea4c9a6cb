"""The segmentation configs: ``SegmentConfig`` (the U-Net, its training and how it is
scored; saved in every segmenter checkpoint) and ``GainConfig`` (the augmentation-gain
experiment around it; saved in ``gain.json``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from medaug.errors import ConfigError
from medaug.settings import Settings
from medaug.synth.layouts import SOURCES as MASK_SOURCES
from medaug.train.spec import GeneratorSpec

AUGMENTS = ("none", "classical")
#: The gain experiment's arms: what each U-Net trains on (``real`` always runs).
ARMS = (
    "real", "real+classical", "real+synth", "real+classical+synth", "synth-only",
    "real+labels2image", "real+classical+labels2image",
)  # fmt: skip
DEFAULT_ARMS = ARMS[:4]
#: Arms that mix real items with other items at ``ratio``.
MIXED_ARMS = ("real+synth", "real+classical+synth", "real+labels2image",
              "real+classical+labels2image")  # fmt: skip
#: The arms whose mixed-in items are painted from real labels (labels2image).
PAINTED_ARMS = ("real+labels2image", "real+classical+labels2image")
#: The fair rivals of an arm, beyond ``real``: what it adds is measured against the arm
#: without it (synthetic pairs on top of classical augmentation) and against painting
#: under the same augmentation. ``summarize`` pairs each arm with each rival that ran.
RIVALS: dict[str, tuple[str, ...]] = {
    "real+synth": ("real+labels2image",),
    "real+classical+synth": ("real+classical", "real+classical+labels2image"),
    "real+classical+labels2image": ("real+classical",),
}
#: The labels2image draws (segment/labels2image.py): fitted to the training cases'
#: class intensities, or SynthSeg's wide random contrasts.
PAINTINGS = ("fitted", "wide")
#: How the gain experiment draws synthetic cases (``medaug.synth`` modes).
GAIN_MODES = ("prior", "perturb")
#: The gain experiment's real patients per regime when none are asked for.
DEFAULT_TRAIN_PATIENTS: tuple[int | str, ...] = (2, 4, "all")


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
            raise ConfigError(f"{{ratio}} must be in [0, 1), got {self.ratio}")
        if len(self.strides) != len(self.channels) - 1:
            raise ConfigError("strides must have one entry fewer than channels")
        if self.lr <= 0 or self.tolerance_mm <= 0 or self.workers < 0:
            raise ConfigError("lr and tolerance_mm must be > 0, workers >= 0")
        if self.amp not in ("auto", "off"):
            raise ConfigError(f"amp must be auto or off, got {self.amp!r}")
        if not 0.0 <= self.target_fraction <= 1.0:
            raise ConfigError(f"target_fraction must be in [0, 1], got {self.target_fraction}")


@dataclass(frozen=True)
class GainConfig(Settings):
    """Settings of the augmentation-gain experiment (``run_gain``): the patient sweep,
    the arms, the synthetic data and the generators behind them, and the U-Net that
    every arm trains for the same number of steps."""

    SOURCE: ClassVar[str] = "gain config"

    # real patients per regime ("all": every training patient of the fold); None:
    # DEFAULT_TRAIN_PATIENTS (2, 4, all), cut to what the smallest fold trains on (a note)
    train_patients: tuple[int | str, ...] | None = None
    seeds: int = 3  # segmenter seeds per arm and regime: seed, seed + 1, ...
    folds: int | None = None  # K-fold cross-validation over patients (None: one split)
    # which of the K folds this run trains and scores (None: all). Folds are independent
    # (their own patients and generators), so one job per fold, in the same out folder,
    # then one run over all folds that reuses every record, gives the whole table
    only_folds: tuple[int, ...] | None = None
    test_fraction: float = 0.2  # share of patients held out for testing when folds is None
    arms: tuple[str, ...] = DEFAULT_ARMS  # which of ARMS run (real always runs: the reference)
    ratio: float = 0.5  # synthetic (or painted) share of the batches of MIXED_ARMS, in [0, 1)
    synth_n: int = 200  # synthetic cases made per regime
    synth_mode: str = "prior"  # prior | perturb (around the regime's own training cases)
    # keep only synthetic pairs whose image a segmenter trained on the regime's patients
    # reads as their label with at least this Dice (synth --min-fidelity); None: all
    min_fidelity: float | None = None
    # where a conditional generator's layouts come from: real (the regime's masks,
    # moved) or learned (a mask generator fitted on the regime's layouts beside it)
    masks: str = "real"
    # the painted arms' draw: fitted (class intensities of the regime's cases) or wide
    # (SynthSeg's random contrasts); segment/labels2image.py
    painting: str = "fitted"
    # the generator trained per regime: medaug's default spec (train/spec.py)
    generator: GeneratorSpec = field(default_factory=GeneratorSpec)
    seed: int = 0  # the split, the patient order, the generators and the first U-Net seed
    device: str = "auto"  # auto | cpu | cuda | cuda:N (also the U-Net's)
    segment: SegmentConfig = field(default_factory=SegmentConfig)  # the U-Net every arm trains

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"{{ratio}} must be in [0, 1), got {self.ratio}")
        # "real,real+synth" as well as separate names (the command line's --arms)
        given = tuple(a.strip() for v in self.arms for a in str(v).split(",") if a.strip())
        unknown = [a for a in given if a not in ARMS]
        if unknown:
            raise ConfigError(f"unknown arm {unknown[0]!r}; arms are {', '.join(ARMS)}")
        if self.seeds < 1:
            raise ConfigError(f"{{seeds}} must be at least 1, got {self.seeds}")
        if self.only_folds is not None:
            only = tuple(sorted({int(f) for f in self.only_folds}))
            if self.folds is None:
                raise ConfigError("{only_folds} picks folds of {folds}: give {folds} too")
            if not only or only[0] < 0 or only[-1] >= self.folds:
                raise ConfigError(
                    f"{{only_folds}} takes fold numbers 0 to {self.folds - 1} "
                    f"({{folds}} {self.folds}), got {list(self.only_folds)}"
                )
            object.__setattr__(self, "only_folds", only)
        if self.synth_mode not in GAIN_MODES:
            raise ConfigError(f"{{synth_mode}} must be prior or perturb, got {self.synth_mode!r}")
        if self.synth_n < 1:
            raise ConfigError(f"{{synth_n}} must be at least 1, got {self.synth_n}")
        if self.min_fidelity is not None and not 0.0 < self.min_fidelity <= 1.0:
            raise ConfigError(f"{{min_fidelity}} must be in (0, 1], got {self.min_fidelity:g}")
        if self.masks not in MASK_SOURCES:
            raise ConfigError(f"{{masks}} must be {' or '.join(MASK_SOURCES)}, got {self.masks!r}")
        if self.masks != "real" and self.synth_mode == "perturb":
            raise ConfigError(
                "{synth_mode} perturb keeps each training case's own layout; {masks} "
                "learned draws new ones: use one or the other"
            )
        if self.painting not in PAINTINGS:
            raise ConfigError(
                f"{{painting}} must be {' or '.join(PAINTINGS)}, got {self.painting!r}"
            )
        # normal forms: a sorted sweep, the arms in ARMS order, the U-Net on our device
        arms = ("real", *[a for a in ARMS[1:] if a in given])
        if self.train_patients is not None:
            sweep = tuple(parse_train_patients(self.train_patients))
            object.__setattr__(self, "train_patients", sweep)
        object.__setattr__(self, "arms", arms)
        object.__setattr__(self, "segment", self.segment.replace(device=self.device))

    @property
    def needs_synthetic(self) -> bool:
        return any("synth" in a for a in self.arms)

    def settings(self, given: bool) -> dict[str, Any]:
        """``gain.json``'s settings block (``given``: one generator was given)."""
        return {
            "train_patients": None if self.train_patients is None else list(self.train_patients),
            "seeds": self.seeds,
            "folds": self.folds,
            "only_folds": None if self.only_folds is None else list(self.only_folds),
            "test_fraction": None if self.folds else self.test_fraction,
            "arms": list(self.arms),
            "ratio": self.ratio,
            "synth_n": self.synth_n,
            "synth_mode": self.synth_mode,
            "min_fidelity": self.min_fidelity,
            "masks": self.masks,
            "painting": self.painting,
            "generator": "given" if given else self.generator.to_dict(),
            "seed": self.seed,
            "segment": self.segment.to_dict(),
        }


def default_sweep(fewest: int) -> tuple[tuple[int | str, ...], str | None]:
    """The default regimes (:data:`DEFAULT_TRAIN_PATIENTS`) for folds whose smallest
    training side holds ``fewest`` patients, and a note when they had to shrink.

    A first try on two or three scans leaves one or two training patients: the counts
    that do not fit are dropped (``all`` stays) instead of failing, and the note says
    so. Counts asked for explicitly are never changed.
    """
    numbers = [n for n in DEFAULT_TRAIN_PATIENTS if isinstance(n, int)]
    if all(n <= fewest for n in numbers):
        return DEFAULT_TRAIN_PATIENTS, None
    sweep: tuple[int | str, ...] = (*[n for n in numbers if n < fewest], "all")
    default = ", ".join(map(str, DEFAULT_TRAIN_PATIENTS))
    return sweep, (
        f"real patients per regime: {', '.join(map(str, sweep))} (the default {default} "
        f"cut to what the smallest fold trains on: {fewest} "
        f"patient{'' if fewest == 1 else 's'})"
    )


def parse_train_patients(values: Sequence[str | int]) -> list[int | str]:
    """``["2", "4,8", "all"]`` -> ``[2, 4, 8, "all"]`` (sorted, unique)."""
    out: set[int | str] = set()
    for value in values:
        for part in str(value).split(","):
            part = part.strip().lower()
            if not part:
                continue
            if part == "all":
                out.add("all")
            elif part.isdigit() and int(part) >= 1:
                out.add(int(part))
            else:
                raise ConfigError(
                    f"{{train_patients}} takes patient counts >= 1 or 'all', got {part!r}"
                )
    if not out:
        raise ConfigError("{train_patients} needs at least one patient count")
    numbers = sorted(v for v in out if isinstance(v, int))
    return [*numbers, *(["all"] if "all" in out else [])]


__all__ = [
    "ARMS",
    "AUGMENTS",
    "DEFAULT_ARMS",
    "DEFAULT_TRAIN_PATIENTS",
    "GAIN_MODES",
    "MIXED_ARMS",
    "PAINTED_ARMS",
    "PAINTINGS",
    "RIVALS",
    "GainConfig",
    "SegmentConfig",
    "default_sweep",
    "parse_train_patients",
]
