"""The model config: everything needed to rebuild a generator from a checkpoint alone.

One dataclass serves every variant; each variant reads the fields it needs. Sizes
come from a preset (``cpu``, ``gpu-small``, ``gpu-large``) and the data (grid,
channels, classes); loss weights have per-variant defaults (``VARIANT_DEFAULTS``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from medaug.errors import ConfigError
from medaug.models.registry import variant_names
from medaug.preprocess import layout as LY
from medaug.settings import Settings

#: Sizes per preset. ``base``: channels of the first (full-resolution) level,
#: doubling per level up to ``cap``; ``latent``: latent vector length; ``disc``:
#: first-layer channels of the image discriminator (MONAI PatchDiscriminator); ``seg``:
#: full-resolution channels of the segmentation discriminator (a U-Net: its
#: full-resolution levels dominate; at 16 on 2 CPU cores a 64^2 VAE-GAN step took
#: 1.28 s, at 8 0.79 s, against 0.38 s with the PatchGAN).
PRESETS: dict[str, dict[str, int]] = {
    "cpu": {"base": 16, "cap": 128, "latent": 64, "disc": 16, "seg": 8},
    "gpu-small": {"base": 32, "cap": 256, "latent": 128, "disc": 32, "seg": 32},
    "gpu-large": {"base": 64, "cap": 512, "latent": 256, "disc": 64, "seg": 64},
}

#: The image discriminators a mask-conditioned model can have (``discriminator``).
DISCRIMINATORS = ("patch", "segmentation")
#: How a decoder doubles its feature maps between levels (``upsample``).
UPSAMPLING = ("nearest", "linear")
#: What a mask-conditioned decoder's first feature map comes from (``start``).
STARTS = ("latent", "layout")

#: Loss weights that differ from the dataclass defaults, per variant.
VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    "vae": {},
    "gan": {},
    # Larsen et al.: the pixel term is replaced by discriminator features; a small
    # pixel term stays on so the label channels keep a direct signal.
    "vaegan": {"pixel_weight": 0.1},
    "aae": {},
    "avb": {},
    # The discriminator takes the pixel likelihood's place; a small pixel anchor keeps
    # reconstruct() tied to its input (set 0 for the pure zero-sum form).
    "gvae": {"pixel_weight": 0.1},
}


@dataclass(frozen=True)
class ModelConfig(Settings):
    """Architecture and loss weights of one generative model.

    Tensors the model sees are channel-first, ``(B, C, X, Y[, Z])``: ``image_channels``
    channels in [-1, 1] and a label class map. With ``condition="none"`` it generates
    the image and the label's ``classes`` one-hot channels (background first)
    together. With ``condition="mask"`` it renders the image around a given layout
    map (``preprocess/layout.py``: the label joined with the ``layout`` context): the
    decoder's normalisation is modulated by the layout (SPADE), the encoder sees the
    image alone (appearance), the discriminator sees image + layout, and the label of
    every output is exactly the layout's label classes. ``role="layout"`` is a mask
    generator: no image channels, its "label" is the layout map itself.
    """

    SOURCE: ClassVar[str] = "model config"

    variant: str = "vaegan"
    dims: int = 2  # 2: axial slices; 3: volumes (MONAI's spatial_dims)
    grid: tuple[int, ...] = (64, 64)  # spatial size, from the cache config
    image_channels: int = 1  # 1 + 2 * context slices (2.5D)
    classes: int = 2  # label classes including background
    preset: str = "cpu"  # the preset the sizes came from (recorded, not re-read)
    channels: tuple[int, ...] = (16, 32, 64, 128, 128)  # per level, full resolution first
    latent_dim: int = 64  # length of the latent vector z
    res_units: int = 1  # MONAI ResidualUnit subunits per level
    norm_groups: int = 8  # GroupNorm groups (no batch statistics: DDP and tiny batches)
    disc_channels: int = 16  # first layer of the image discriminator
    disc_layers: int = 3  # PatchDiscriminator layers after the first
    # losses
    adv_loss: str = "nonsat"  # "nonsat" (softplus) or "hinge"
    kl_weight: float = 1.0  # KL per voxel against the per-voxel reconstruction terms
    pixel_weight: float = 1.0  # L1 on image channels
    label_weight: float = 1.0  # cross-entropy on label channels
    adv_weight: float = 0.05  # generator-side adversarial term
    feature_weight: float = 1.0  # vaegan: L1 between discriminator features
    r1_gamma: float = 0.0  # R1 penalty on real inputs (0: off)
    # conditioning
    condition: str = "none"  # "none": joint image + label; "mask": image from a layout
    layout: str = "target"  # the layout's channels (preprocess/layout.py CHANNELS)
    role: str = "pair"  # "pair": image (+ label); "layout": a mask generator
    spade_hidden: int = 32  # channels of SPADE's shared layer (MONAI SPADE)
    # channels of the latent projected and broadcast over the grid beside the layout in
    # every SPADE (OASIS's "3D noise": appearance at every scale; 0: the latent enters
    # at the bottom only)
    latent_map: int = 0
    # a mask-conditioned decoder's first feature map: "latent" (a linear layer from the
    # latent: a learned template per position of the bottom grid) or "layout" (a
    # convolution over the layout's class shares on the bottom grid beside the latent
    # broadcast over it, as OASIS starts; nothing tied to a position)
    start: str = "latent"
    # the image discriminator: "patch" (MONAI PatchGAN over image + layout: real or fake)
    # or "segmentation" (OASIS: a U-Net over the image alone that labels every voxel with
    # its layout class or "fake"; mask-conditioned models only). aae and avb judge
    # latents; "segmentation" adds it to their discriminator phase. vae has none.
    discriminator: str = "patch"
    seg_channels: int = 8  # segmentation discriminator: channels at full resolution
    labelmix_weight: float = 10.0  # segmentation discriminator: OASIS's LabelMix term
    # how the decoders double their feature maps: "nearest" (copies: the coarse levels'
    # blocks can show as edges) or "linear" (bi-/trilinear interpolation)
    upsample: str = "nearest"
    # DiffAugment on every discriminator input, real and fake ("" off; models/augment.py)
    augment: tuple[str, ...] = ()
    augment_p: float = 1.0  # probability of each augmentation per sample

    @property
    def conditional(self) -> bool:
        return self.condition == "mask"

    @property
    def layout_classes(self) -> int:
        """Classes of the layout map (the one-hot conditioning channels)."""
        return LY.layout_classes(self.layout, self.label_classes)

    @property
    def label_classes(self) -> int:
        """Classes of the label a pair model's outputs carry (background included)."""
        if self.role == "layout":
            return self.classes - LY.context_offset(self.layout)
        return self.classes

    @property
    def needs_context(self) -> bool:
        """Whether training batches must carry the cached context map."""
        return (self.conditional or self.role == "layout") and self.layout != "target"

    @property
    def decoder_channels(self) -> int:
        """What the decoder outputs: the image alone when conditioned on a layout."""
        return self.image_channels if self.conditional else self.out_channels

    @property
    def encoder_channels(self) -> int:
        """What the encoder sees: the image alone (appearance) when conditional."""
        return self.image_channels if self.conditional else self.out_channels

    @property
    def joint_channels(self) -> int:
        """Channels of the joint tensors the model passes around and its
        discriminator sees: image + label one-hot, or image + layout one-hot."""
        return self.image_channels + (self.layout_classes if self.conditional else self.classes)

    @property
    def out_channels(self) -> int:
        return self.image_channels + self.classes

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.latent_dim,)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __post_init__(self) -> None:
        if isinstance(self.augment, str):
            parts = [p.strip() for p in self.augment.split(",") if p.strip()]
            object.__setattr__(self, "augment", tuple(parts))
        elif isinstance(self.augment, list):
            object.__setattr__(self, "augment", tuple(self.augment))
        for name in ("grid", "channels"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, int) for v in value):
                raise ConfigError(f"{name} must be a list of integers, got {value!r}")

        if self.variant not in variant_names():
            raise ConfigError(
                f"unknown model {self.variant!r}; choose one of {', '.join(variant_names())}"
            )
        if self.dims not in (2, 3) or len(self.grid) != self.dims:
            raise ConfigError(f"grid {self.grid} does not fit dims {self.dims}")
        if self.adv_loss not in ("nonsat", "hinge"):
            raise ConfigError(f"adv_loss must be 'nonsat' or 'hinge', got {self.adv_loss!r}")
        if self.condition not in ("none", "mask"):
            raise ConfigError(f"condition must be 'none' or 'mask', got {self.condition!r}")
        if self.discriminator not in DISCRIMINATORS:
            raise ConfigError(
                f"discriminator must be one of {', '.join(DISCRIMINATORS)}, "
                f"got {self.discriminator!r}"
            )
        check_discriminator_condition(self.discriminator, self.condition)
        if self.start not in STARTS:
            raise ConfigError(f"start must be one of {', '.join(STARTS)}, got {self.start!r}")
        if self.start == "layout" and self.condition != "mask":
            raise ConfigError('start "layout" starts the decoder from a layout: condition mask')
        if self.upsample not in UPSAMPLING:
            raise ConfigError(
                f"upsample must be one of {', '.join(UPSAMPLING)}, got {self.upsample!r}"
            )
        if self.role not in ("pair", "layout"):
            raise ConfigError(f"role must be 'pair' or 'layout', got {self.role!r}")
        LY.check_channels(self.layout)
        min_image = 0 if self.role == "layout" else 1
        if self.classes < 2 or self.image_channels < min_image or self.latent_dim < 1:
            raise ConfigError("a model needs >= 1 image channel, >= 2 classes, latent_dim >= 1")
        if self.role == "layout" and (self.image_channels or self.conditional):
            raise ConfigError(
                "a mask generator (role layout) has no image channels and no condition"
            )
        if not 0.0 <= self.augment_p <= 1.0:
            raise ConfigError(f"augment_p must be in [0, 1], got {self.augment_p}")
        bad = [c for c in (*self.channels, self.seg_channels) if c % self.norm_groups]
        if bad:
            raise ConfigError(f"channels {bad} are not multiples of norm_groups {self.norm_groups}")
        if levels(self.grid) != len(self.channels) - 1:
            raise ConfigError(
                f"{len(self.channels)} channel levels do not fit grid {self.grid} "
                f"(it halves {levels(self.grid)} times down to {bottom(self.grid)})"
            )


def check_discriminator_condition(discriminator: str, condition: str) -> None:
    """The segmentation discriminator judges voxels against a layout: a joint model
    (``condition="none"``) has none to give it."""
    if discriminator == "segmentation" and condition != "mask":
        raise ConfigError(
            "--discriminator segmentation labels each voxel with its layout class, so it "
            "needs a mask-conditioned model: add --condition mask"
        )


#: A mask generator's KL weight. Its prior draws are its output, and at the image
#: models' weight (8) its posterior drifted to about 70 nats on 2 patients, so prior
#: codes decoded to tissue blobs that held the target in 8% of draws; at 64 it keeps
#: about 9 nats and its draws are layouts (README, "Learned masks").
MASK_KL_WEIGHT = 64.0


def mask_generator_overrides(cfg: ModelConfig) -> dict[str, Any]:
    """The fields that turn a conditional model's config into its mask generator's: the
    same variant, layout maps as the "label", no image channels, no condition (so a
    PatchGAN: a segmentation discriminator needs a layout to judge against), and its
    own KL weight (:data:`MASK_KL_WEIGHT`)."""
    return {
        "role": "layout",
        "kl_weight": MASK_KL_WEIGHT,
        "condition": "none",
        "discriminator": "patch",
        "layout": cfg.layout,
        "image_channels": 0,
        "classes": cfg.layout_classes,
        "augment": cfg.augment,
    }


def levels(grid: Sequence[int]) -> int:
    """How often the encoder halves ``grid``: while every side is even and > 4."""
    n, g = 0, list(grid)
    while all(s % 2 == 0 and s > 4 for s in g):
        g = [s // 2 for s in g]
        n += 1
    return n


def bottom(grid: Sequence[int]) -> tuple[int, ...]:
    """Spatial size at the bottom of the encoder."""
    return tuple(s >> levels(grid) for s in grid)


def model_config(
    variant: str,
    *,
    dims: int,
    grid: Sequence[int],
    image_channels: int = 1,
    classes: int = 2,
    preset: str = "cpu",
    **overrides: Any,
) -> ModelConfig:
    """The config of ``variant`` at ``preset`` sizes for data of this grid and channels.

    Example:
        >>> cfg = model_config("vae", dims=2, grid=(64, 64))
        >>> cfg.channels, cfg.latent_dim
        ((16, 32, 64, 128, 128), 64)
    """
    if variant not in variant_names():
        raise ConfigError(f"unknown model {variant!r}; choose one of {', '.join(variant_names())}")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    size = PRESETS[preset]
    n = levels(grid)
    if n < 1:
        raise ConfigError(f"grid {tuple(grid)} is too small or odd for the encoder (need >= 8)")
    channels = tuple(min(size["base"] << i, size["cap"]) for i in range(n + 1))
    doc: dict[str, Any] = {
        "variant": variant,
        "dims": dims,
        "grid": tuple(int(g) for g in grid),
        "image_channels": image_channels,
        "classes": classes,
        "preset": preset,
        "channels": channels,
        "latent_dim": size["latent"],
        "disc_channels": size["disc"],
        "seg_channels": size["seg"],
        "disc_layers": min(3, n),
    }
    doc |= VARIANT_DEFAULTS[variant]
    doc |= overrides
    return ModelConfig.from_dict(doc)
