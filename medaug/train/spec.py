"""The generator medaug fits when it fits one itself: one object, one set of defaults.

``medaug synth --input`` without ``--model``, the gain experiment (one generator per
fold and regime), ``medaug demo`` and :func:`medaug.synth.synthesize` from Python all
take a :class:`GeneratorSpec` and hand it to :func:`medaug.train.fit.fit_or_resume`;
none of them keeps defaults of its own. The spec is not stored beside the
checkpoint: every field is in the checkpoint's model and training configs already,
and :meth:`GeneratorSpec.of` reads it back from there.

Example:
    >>> spec = GeneratorSpec()
    >>> spec.describe()
    'mask-conditioned (target+body+tissue) vaegan generator, segmentation discriminator'
    >>> spec.steps_for("cpu"), spec.steps_for("cuda"), GeneratorSpec(steps=600).steps_for("cuda")
    (900, 1800, 600)
    >>> GeneratorSpec(condition="none").model_overrides()
    {'condition': 'none', 'discriminator': 'patch'}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from medaug.errors import ConfigError
from medaug.models.config import DISCRIMINATORS, PRESETS, check_discriminator_condition
from medaug.models.registry import variant_names
from medaug.preprocess import layout as LY
from medaug.settings import Settings

if TYPE_CHECKING:
    from medaug.train.checkpoint import Checkpoint

#: The image discriminator of a mask-conditioned generator when the spec says "auto".
#: Chosen by benchmarks/bench_fidelity.py (README: label fidelity; 64^2 at 3 mm, 2
#: patients, ~10 min each on 2 cores): label fidelity 0.434 with it and KL weight 8,
#: 0.415 with KL weight 1, against 0.388 / 0.393 with the PatchGAN.
DEFAULT_DISCRIMINATOR = "segmentation"
#: The KL weight per voxel of a mask-conditioned generator when the spec leaves it
#: unset (the same measurements: 8 beat 1 with the segmentation discriminator; the
#: appearance posterior then holds well under a nat, so prior draws are in
#: distribution and prior and posterior fidelity agree).
DEFAULT_KL_WEIGHT = 8.0
#: Whether a mask-conditioned generator trains on moved pairs by default (TrainConfig.warp):
#: measured label fidelity 0.656 with it against 0.598 without (64^2 at 3 mm, 2 patients,
#: 750 steps, judged by a segmenter trained with classical augmentation; README).
DEFAULT_WARP = True
#: Optimisation steps when the spec leaves them unset, on a CPU: about 14 minutes for the
#: default generator at 64^2 on 2 cores (0.95 s a step), inside the 15 minutes
#: ``medaug synth --input`` promises there.
DEFAULT_STEPS_CPU = 900
#: ... and on a GPU (or another accelerator), where either budget takes minutes. Twice
#: the CPU's steps measured better where it counts: over 4 folds of the gain experiment
#: (2 patients, 1500 U-Net steps; README: the generator's budget), real+classical+synth
#: gained +0.016 over real+classical with 1800-step generators against -0.006 with
#: 900-step ones. Measured with the cpu preset; on CUDA the gpu-small preset is fitted.
DEFAULT_STEPS_ACCELERATOR = 1800
#: The Adam settings (TrainConfig fields) of a mask-conditioned GAN with the segmentation
#: discriminator: OASIS's (generator 1e-4, discriminator 4e-4, betas (0, 0.999)). With
#: TrainConfig's shared ones (2e-4 both, betas (0.5, 0.999)) its slices came out washed out
#: (sharpness 0.67-0.69 x real, pancreas HU 77-78 against 97; 64^2 at 3 mm, 6 patients,
#: 750 steps, two seeds each); with these, sharpness 0.93-0.97 x and 88-98 HU, inside
#: both image targets, for 0.008 of label fidelity (0.663 against 0.671, mean of two
#: seeds; README: label fidelity). The GAN has no encoder to tie its image to a real
#: slice, so the adversarial game alone sets its contrast.
GAN_OPTIMIZER: dict[str, Any] = {"lr": 1e-4, "lr_d": 4e-4, "betas": (0.0, 0.999)}
#: Variants whose loss has a KL term that kl_weight scales.
KL_VARIANTS = ("vae", "vaegan", "gvae", "avb")

#: Variants without an image discriminator of their own: "auto" gives them none.
NO_IMAGE_DISCRIMINATOR = ("vae", "aae", "avb")


@dataclass(frozen=True)
class GeneratorSpec(Settings):
    """What generator to fit: variant, size, training length, conditioning, losses.

    Everything else (learning rates, batch, loss weights not named here) comes from
    :class:`medaug.train.TrainConfig` and the variant's defaults in
    :mod:`medaug.models.config`, except a mask-conditioned GAN's Adam settings
    (:data:`GAN_OPTIMIZER`).
    """

    SOURCE: ClassVar[str] = "generator spec"

    variant: str = "vaegan"  # vae | gan | vaegan | aae | avb | gvae
    dims: int = 2  # 2: axial slices; 3: volumes
    preset: str = "auto"  # model size: auto (cpu on a CPU, gpu-small on CUDA) or a preset
    # optimisation steps (batch 16, or the training set when smaller); None: by device,
    # DEFAULT_STEPS_CPU (900) on a CPU, DEFAULT_STEPS_ACCELERATOR (1800) on a GPU
    steps: int | None = None
    # mask: images rendered around layouts (label + context), each pair labelled exactly
    # by its layout; none: image and label generated together (the first design)
    condition: str = "mask"
    layout: str = "target+body+tissue"  # condition mask: the layout's channels
    # the image discriminator of a mask-conditioned model: patch | segmentation | auto
    # (DEFAULT_DISCRIMINATOR for gan / vaegan / gvae; none added to vae / aae / avb)
    discriminator: str = "auto"
    # KL weight per voxel (None: DEFAULT_KL_WEIGHT when mask-conditioned, else the
    # variant's default, 1)
    kl_weight: float | None = None
    augment: tuple[str, ...] = ()  # DiffAugment of discriminator inputs (models/augment.py)
    # training pairs moved as real-mask synthesis moves layouts (TrainConfig.warp; None:
    # DEFAULT_WARP when mask-conditioned, else off)
    warp: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.augment, str):
            ops = tuple(p.strip() for p in self.augment.split(",") if p.strip())
            object.__setattr__(self, "augment", () if ops == ("none",) else ops)
        elif isinstance(self.augment, list):
            object.__setattr__(self, "augment", tuple(self.augment))
        if self.variant not in variant_names():
            raise ConfigError(
                f"unknown model {self.variant!r}; choose one of {', '.join(variant_names())}"
            )
        if self.dims not in (2, 3):
            raise ConfigError(f"dims must be 2 or 3, got {self.dims}")
        if self.preset != "auto" and self.preset not in PRESETS:
            raise ConfigError(
                f"unknown preset {self.preset!r}; choose auto or one of {', '.join(PRESETS)}"
            )
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.condition not in ("none", "mask"):
            raise ConfigError(f"condition must be 'none' or 'mask', got {self.condition!r}")
        LY.check_channels(self.layout)
        if self.discriminator not in ("auto", *DISCRIMINATORS):
            raise ConfigError(
                f"discriminator must be auto, {' or '.join(DISCRIMINATORS)}, "
                f"got {self.discriminator!r}"
            )
        check_discriminator_condition(self.discriminator, self.condition)

    @property
    def resolved_discriminator(self) -> str:
        """The discriminator the model gets: ``auto`` resolved for this variant."""
        if self.discriminator != "auto":
            return self.discriminator
        if self.condition == "mask" and self.variant not in NO_IMAGE_DISCRIMINATOR:
            return DEFAULT_DISCRIMINATOR
        return "patch"

    def model_overrides(self) -> dict[str, Any]:
        """The :class:`medaug.models.ModelConfig` fields this spec sets."""
        doc: dict[str, Any] = {"condition": self.condition}
        if self.condition == "mask":
            doc["layout"] = self.layout
        doc["discriminator"] = self.resolved_discriminator
        if self.kl_weight is not None:
            doc["kl_weight"] = self.kl_weight
        elif self.condition == "mask" and self.variant in KL_VARIANTS:
            doc["kl_weight"] = DEFAULT_KL_WEIGHT
        if self.augment:
            doc["augment"] = ",".join(self.augment)
        return doc

    @property
    def resolved_warp(self) -> bool:
        """Whether the training pairs are moved: ``warp``, or the default for the
        conditioning (a joint model draws no layouts, so it has nothing to match)."""
        if self.warp is not None:
            return self.warp
        return DEFAULT_WARP and self.condition == "mask"

    def train_overrides(self, device_type: str) -> dict[str, Any]:
        """The :class:`medaug.train.TrainConfig` fields this spec sets on a device of
        this type (``cpu``, ``cuda``): steps, moved pairs, and a mask-conditioned GAN's
        :data:`GAN_OPTIMIZER`."""
        steps = self.steps_for(device_type)
        return {"steps": steps, "warp": self.resolved_warp} | self.optimizer_overrides()

    def optimizer_overrides(self) -> dict[str, Any]:
        """The Adam settings (TrainConfig fields) this spec sets: :data:`GAN_OPTIMIZER`
        for a mask-conditioned GAN with the segmentation discriminator, else none."""
        gan = (self.variant, self.condition, self.resolved_discriminator)
        return dict(GAN_OPTIMIZER) if gan == ("gan", "mask", "segmentation") else {}

    def steps_for(self, device_type: str) -> int:
        """The training steps on a device of this type (``cpu``, ``cuda``)."""
        if self.steps is not None:
            return self.steps
        return DEFAULT_STEPS_CPU if device_type == "cpu" else DEFAULT_STEPS_ACCELERATOR

    def for_device(self, device_type: str) -> GeneratorSpec:
        """This spec with its steps fixed for a device of this type (what a results
        file records: the budget that ran, not "by device")."""
        return self.replace(steps=self.steps_for(device_type))

    def preset_for(self, device_type: str) -> str:
        """The size preset on a device of this type (``cpu``, ``cuda``)."""
        if self.preset != "auto":
            return self.preset
        return "cpu" if device_type == "cpu" else "gpu-small"

    def describe(self) -> str:
        """One line for the log: what is fitted."""
        what = f"{self.variant} generator"
        if self.condition == "mask":
            what = f"mask-conditioned ({self.layout}) {what}"
        if self.condition == "mask" and self.variant != "vae":
            what += f", {self.resolved_discriminator} discriminator"
        return what

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> GeneratorSpec:
        """The spec a checkpoint was fitted to (from its model and training configs)."""
        m = checkpoint.model_config
        return cls(
            variant=m.variant, dims=m.dims, preset=m.preset, steps=checkpoint.train_config.steps,
            condition=m.condition, layout=m.layout if m.conditional else cls.layout,
            discriminator=m.discriminator if m.conditional else "auto",
            kl_weight=m.kl_weight, augment=tuple(m.augment), warp=checkpoint.train_config.warp,
        )  # fmt: skip


__all__ = [
    "DEFAULT_DISCRIMINATOR",
    "DEFAULT_KL_WEIGHT",
    "DEFAULT_STEPS_ACCELERATOR",
    "DEFAULT_STEPS_CPU",
    "DEFAULT_WARP",
    "GeneratorSpec",
]
