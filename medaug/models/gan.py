"""GAN (Radford et al. 2016, DCGAN-style): a decoder from N(0, I) judged by MONAI's
PatchGAN discriminator (or, conditioned on a layout, OASIS's segmentation
discriminator); non-saturating or hinge loss, optional R1 penalty."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medaug.models.base import GenerativeModel, Noise
from medaug.models.config import ModelConfig
from medaug.models.networks import decoder, image_discriminator
from medaug.models.registry import register


@register
class GAN(GenerativeModel):
    name = "gan"
    phases = ("generator", "discriminator")
    has_encoder = False

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.decoder = decoder(config)
        self.discriminator = image_discriminator(config)

    def phase_modules(self, phase: str) -> list[nn.Module]:
        return [self.decoder] if phase == "generator" else [self.discriminator]

    def losses(
        self, batch: dict[str, Any], phase: str, noise: Noise | None = None
    ) -> dict[str, torch.Tensor]:
        noise = self._noise(batch, noise)
        # a joint GAN's generator phase needs no real batch; a conditional one its layout
        x = self.inputs(batch) if phase == "discriminator" or self.conditional else None
        layout = None if x is None else self.layout_of(x)
        if phase == "discriminator":
            assert x is not None
            with torch.no_grad():
                fakes = self._fakes or [self._prior(noise, layout)]
            self._fakes = []
            return self._image_d_phase(self.discriminator, x, fakes, noise)
        fake = self._prior(noise, layout)
        adv = self._g_adv(self._discriminate(self.discriminator, fake, noise))
        self._fakes = [fake.detach()]
        return {"loss": adv, "g_adv": adv.detach()}

    def _prior(self, noise: Noise, layout: torch.Tensor | None) -> torch.Tensor:
        return self.decode(noise(*self.latent_shape), layout)
