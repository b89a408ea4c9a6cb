"""Networks shared by the variants, 2D and 3D through ``spatial_dims``.

Built from MONAI blocks: ``Convolution`` and ``ResidualUnit`` for the encoder and
decoder, ``PatchDiscriminator`` for images, ``FullyConnectedNet`` for latent-space
critics. GroupNorm everywhere: no batch statistics, so results do not depend on
the per-GPU batch and DDP needs no buffer synchronisation.
"""

from __future__ import annotations

import itertools
import math

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.blocks.spade_norm import SPADE
from monai.networks.nets import FullyConnectedNet, PatchDiscriminator
from torch import nn

from medaug.models.config import ModelConfig, bottom, levels

ACT = ("LEAKYRELU", {"negative_slope": 0.2})


def _norm(cfg: ModelConfig) -> tuple[str, dict[str, int]]:
    return ("GROUP", {"num_groups": cfg.norm_groups})


class ConvEncoder(nn.Module):
    """``(B, C, *grid)`` -> ``(B, F)`` features: a stem and one strided residual
    unit per level, flattened at the bottom (``F = channels[-1] * prod(bottom)``)."""

    def __init__(self, cfg: ModelConfig, in_channels: int):
        super().__init__()
        d, ch = cfg.dims, cfg.channels
        layers: list[nn.Module] = [
            Convolution(d, in_channels, ch[0], kernel_size=3, act=ACT, norm=_norm(cfg))
        ]
        for a, b in itertools.pairwise(ch):
            layers.append(
                ResidualUnit(d, a, b, strides=2, subunits=cfg.res_units, act=ACT, norm=_norm(cfg))
            )
        self.body = nn.Sequential(*layers)
        self.features = ch[-1] * math.prod(bottom(cfg.grid))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)


class GaussianEncoder(nn.Module):
    """``(B, C, *grid)`` -> ``(mu, logvar)``, each ``(B, latent_dim)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.conv = ConvEncoder(cfg, cfg.encoder_channels)
        self.head = nn.Linear(self.conv.features, 2 * cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.conv(x)).chunk(2, dim=1)
        # a bounded log-variance keeps exp() finite in bf16 early in training
        return mu, logvar.clamp(-30.0, 20.0)


class ImplicitEncoder(nn.Module):
    """AVB's posterior: ``z = f(x, eps)``, eps ~ N(0, I), so q(z|x) is any shape."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.conv = ConvEncoder(cfg, cfg.encoder_channels)
        self.head = FullyConnectedNet(
            self.conv.features + cfg.latent_dim, cfg.latent_dim, (4 * cfg.latent_dim,), act=ACT
        )

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.conv(x), eps.to(x.dtype)], dim=1))


def doubling(cfg: ModelConfig) -> nn.Upsample:
    """A decoder's step from one level to the next: ``cfg.upsample`` doubles the grid by
    copying voxels (nearest) or interpolating (bi-/trilinear)."""
    if cfg.upsample == "nearest":
        return nn.Upsample(scale_factor=2, mode="nearest")
    mode = "bilinear" if cfg.dims == 2 else "trilinear"
    return nn.Upsample(scale_factor=2, mode=mode, align_corners=False)


class Decoder(nn.Module):
    """``(B, latent_dim)`` -> ``(B, out_channels, *grid)`` raw outputs.

    A linear layer to the bottom feature map, then per level an upsampling
    (:func:`doubling`) and a residual unit (no transposed convolutions: no checkerboard).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, ch = cfg.dims, cfg.channels
        self.bottom_shape = (ch[-1], *bottom(cfg.grid))
        self.fc = nn.Linear(cfg.latent_dim, math.prod(self.bottom_shape))
        layers: list[nn.Module] = []
        for a, b in zip(ch[::-1][:-1], ch[::-1][1:], strict=True):
            layers.append(doubling(cfg))
            layers.append(
                ResidualUnit(d, a, b, strides=1, subunits=cfg.res_units, act=ACT, norm=_norm(cfg))
            )
        layers.append(Convolution(d, ch[0], cfg.out_channels, kernel_size=3, conv_only=True))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, layout: torch.Tensor | None = None) -> torch.Tensor:
        h = nn.functional.leaky_relu(self.fc(z), 0.2).view(z.shape[0], *self.bottom_shape)
        return self.body(h)


class SpadeBlock(nn.Module):
    """A residual block whose normalisation is modulated by the layout (Park et al.
    2019): SPADE -> act -> conv, plus a 1x1 skip where the width changes. MONAI's
    ``SPADE`` does the modulation (GroupNorm without affine underneath). One SPADE per
    block, not SPADE's two: on 2 CPU cores the second made a 128^2 VAE-GAN step a third
    slower (5.8 s against 4.4 s, batch 16)."""

    def __init__(self, cfg: ModelConfig, a: int, b: int):
        super().__init__()
        d, k = cfg.dims, cfg.layout_classes + cfg.latent_map
        norm = ("GROUP", {"num_groups": cfg.norm_groups, "affine": False})
        self.norm = SPADE(k, a, spatial_dims=d, hidden_channels=cfg.spade_hidden, norm=norm)
        self.conv = Convolution(d, a, b, kernel_size=3, conv_only=True)
        self.skip = nn.Identity() if a == b else Convolution(d, a, b, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        h = self.conv(nn.functional.leaky_relu(self.norm(x, layout), 0.2))
        return self.skip(x) + h


class SpadeDecoder(nn.Module):
    """``(B, latent_dim)`` + layout one-hot ``(B, L, *grid)`` -> ``(B, C, *grid)`` image
    outputs: the latent gives appearance, the layout where each tissue goes.

    As :class:`Decoder` (linear layer to the bottom map, or with ``start="layout"`` a
    convolution over the layout there; :func:`doubling` per level, no transposed
    convolutions), with SPADE residual blocks below full resolution
    (SPADE resizes the layout, nearest) and, at full resolution, a plain residual unit
    over the features and the layout itself (a SPADE there took the step from 2.5 s to
    4.4 s). With ``latent_map`` channels, the latent is also projected and broadcast
    over the grid beside the layout wherever the layout enters (OASIS's 3D noise).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ch = cfg.channels
        self.bottom_shape = (ch[-1], *bottom(cfg.grid))
        self.fc: nn.Linear | None = None
        self.stem: Convolution | None = None
        if cfg.start == "layout":  # OASIS: from the layout (and the latent) itself
            self.stem = Convolution(
                cfg.dims, cfg.layout_classes + cfg.latent_dim, ch[-1], kernel_size=3,
                conv_only=True,
            )  # fmt: skip
        else:
            self.fc = nn.Linear(cfg.latent_dim, math.prod(self.bottom_shape))
        self.bottom_block = SpadeBlock(cfg, ch[-1], ch[-1])
        pairs = list(zip(ch[::-1][:-1], ch[::-1][1:], strict=True))
        self.blocks = nn.ModuleList(SpadeBlock(cfg, a, b) for a, b in pairs[:-1])
        # the full-resolution level: a plain residual unit over features + the layout
        # itself (a SPADE there doubled the step time on 2 CPU cores)
        a, b = pairs[-1]
        self.top = ResidualUnit(
            cfg.dims, a + cfg.layout_classes + cfg.latent_map, b, strides=1,
            subunits=cfg.res_units, act=ACT, norm=_norm(cfg),
        )  # fmt: skip
        self.up = doubling(cfg)
        self.out = Convolution(cfg.dims, ch[0], cfg.decoder_channels, kernel_size=3, conv_only=True)
        self.to_map = nn.Linear(cfg.latent_dim, cfg.latent_map) if cfg.latent_map else None

    def forward(self, z: torch.Tensor, layout: torch.Tensor | None = None) -> torch.Tensor:
        if layout is None:
            raise ValueError("a mask-conditioned decoder needs the layout")
        h = self._first(z, layout)
        layout = layout.to(h.dtype)
        if self.to_map is not None:  # the latent beside the layout, at every voxel
            code = self.to_map(z).to(h.dtype)
            code = code.view(*code.shape, *[1] * (layout.ndim - 2)).expand(
                -1, -1, *layout.shape[2:]
            )
            layout = torch.cat([layout, code], dim=1)
        h = self.bottom_block(h, layout)
        for block in self.blocks:
            h = block(self.up(h), layout)
        h = self.top(torch.cat([self.up(h), layout], dim=1))
        return self.out(h)

    def _first(self, z: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        """The bottom feature map: from the latent alone (``start="latent"``), or from
        the layout's class shares per bottom cell beside the latent at every cell."""
        if self.stem is None:
            assert self.fc is not None
            return nn.functional.leaky_relu(self.fc(z), 0.2).view(z.shape[0], *self.bottom_shape)
        grid = self.bottom_shape[1:]
        shares = nn.functional.interpolate(layout.to(z.dtype), size=grid, mode="area")
        code = z.view(*z.shape, *[1] * len(grid)).expand(-1, -1, *grid)
        return nn.functional.leaky_relu(self.stem(torch.cat([shares, code], dim=1)), 0.2)


def decoder(cfg: ModelConfig) -> nn.Module:
    """The variant-independent decoder: SPADE-modulated when conditioned on a layout."""
    return SpadeDecoder(cfg) if cfg.conditional else Decoder(cfg)


def patch_discriminator(cfg: ModelConfig) -> PatchDiscriminator:
    """MONAI's PatchGAN discriminator over image + label (or layout) channels.

    Its forward returns every layer's features, the last being the patch logits,
    which VAE-GAN's feature-space reconstruction uses.
    """
    return PatchDiscriminator(
        spatial_dims=cfg.dims,
        channels=cfg.disc_channels,
        in_channels=cfg.joint_channels,
        num_layers_d=cfg.disc_layers,
        norm=_norm(cfg),
        last_conv_kernel_size=3,
    )


class SegmentationDiscriminator(nn.Module):
    """OASIS's discriminator (Sushko et al. 2021): a U-Net over the image alone that
    labels every voxel with its layout class or "fake".

    ``(B, C, *grid)`` image -> a list of feature maps (the encoder's levels, then the
    decoder's), the last being the logits ``(B, 1 + L, *grid)``: channel 0 "fake",
    channel ``1 + c`` layout class ``c``. The list has the PatchDiscriminator's form,
    so VAE-GAN's feature-space reconstruction reads either.

    MONAI blocks as the rest of the family (strided ``ResidualUnit`` down, nearest
    upsampling and a ``ResidualUnit`` over the skip concatenation up, GroupNorm);
    MONAI's ``BasicUNet`` would do the segmentation but returns no hidden features.
    ``disc_layers + 1`` levels (at most what the grid halves to), widths doubling
    from ``seg_channels`` up to 8x.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.dims
        depth = max(1, min(levels(cfg.grid), cfg.disc_layers + 1))
        widths = [min(cfg.seg_channels << i, 8 * cfg.seg_channels) for i in range(depth + 1)]
        pairs = list(itertools.pairwise(widths))
        self.stem = Convolution(
            d, cfg.image_channels, widths[0], kernel_size=3, act=ACT, norm=_norm(cfg)
        )
        self.down = nn.ModuleList(
            ResidualUnit(d, a, b, strides=2, subunits=1, act=ACT, norm=_norm(cfg)) for a, b in pairs
        )
        self.up_blocks = nn.ModuleList(
            ResidualUnit(d, a + b, a, strides=1, subunits=1, act=ACT, norm=_norm(cfg))
            for a, b in reversed(pairs)
        )
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = Convolution(d, widths[0], 1 + cfg.layout_classes, kernel_size=1, conv_only=True)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(image)
        skips = [h]
        for block in self.down:
            h = block(h)
            skips.append(h)
        features = list(skips)
        skips.pop()
        for block in self.up_blocks:
            h = block(torch.cat([self.up(h), skips.pop()], dim=1))
            features.append(h)
        return [*features, self.head(h)]


def image_discriminator(cfg: ModelConfig) -> nn.Module:
    """The image discriminator ``cfg.discriminator`` names: PatchGAN or segmentation."""
    if cfg.discriminator == "segmentation":
        return SegmentationDiscriminator(cfg)
    return patch_discriminator(cfg)


def latent_discriminator(cfg: ModelConfig) -> FullyConnectedNet:
    """``(B, latent_dim)`` -> ``(B, 1)`` logits: AAE's prior-versus-posterior critic."""
    hidden = (4 * cfg.latent_dim, 4 * cfg.latent_dim)
    return FullyConnectedNet(cfg.latent_dim, 1, hidden, act=ACT)


class PairCritic(nn.Module):
    """AVB's ``T(x, z)`` -> ``(B, 1)``: at its optimum, log q(z|x) - log p(z)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.conv = ConvEncoder(cfg, cfg.encoder_channels)
        width = 4 * cfg.latent_dim
        self.x_head = nn.Linear(self.conv.features, width)
        self.z_head = FullyConnectedNet(cfg.latent_dim, width, (width,), act=ACT)
        self.joint = FullyConnectedNet(2 * width, 1, (width,), act=ACT)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        hx = self.x_head(self.conv(x))
        hz = self.z_head(z.to(hx.dtype))
        return self.joint(torch.cat([hx, hz], dim=1))
