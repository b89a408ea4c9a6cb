"""AAE (Makhzani et al. 2016): an autoencoder whose aggregated posterior is matched to
the N(0, I) prior by a latent-space discriminator instead of a KL term. A
mask-conditioned AAE may add OASIS's segmentation discriminator over its decoded
images (``discriminator="segmentation"``), trained in the same phase."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medaug.models import losses as L
from medaug.models.base import GenerativeModel, Noise
from medaug.models.config import ModelConfig
from medaug.models.networks import (
    GaussianEncoder,
    decoder,
    image_discriminator,
    latent_discriminator,
)
from medaug.models.registry import register


@register
class AAE(GenerativeModel):
    name = "aae"
    phases = ("generator", "discriminator")

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.encoder = GaussianEncoder(config)
        self.decoder = decoder(config)
        self.discriminator = latent_discriminator(config)
        if config.discriminator == "segmentation":
            self.image_disc = image_discriminator(config)

    def phase_modules(self, phase: str) -> list[nn.Module]:
        if phase == "generator":
            return [self.encoder, self.decoder]
        image = self._image_critic()
        return [self.discriminator] + ([image] if image is not None else [])

    def losses(
        self, batch: dict[str, Any], phase: str, noise: Noise | None = None
    ) -> dict[str, torch.Tensor]:
        cfg, noise = self.config, self._noise(batch, noise)
        if phase == "discriminator":
            if self._fakes:
                posterior = self._fakes[0]
            else:
                posterior = self._posterior(self.inputs(batch), noise).detach()
            self._fakes = []
            prior = noise(*self.latent_shape)
            real, fake = self.discriminator(prior), self.discriminator(posterior)
            latent = L.d_loss(real, fake, cfg.adv_loss)
            image = self._image_d_terms(batch, noise, posterior)
            loss = latent + image.pop("image_loss") if image else latent
            return {"loss": loss, "d_adv": latent.detach(), "d_acc": L.d_accuracy(real, fake),
                    **{k: v.detach() for k, v in image.items()}}  # fmt: skip
        x = self.inputs(batch)
        layout = self.layout_of(x)
        z = self._posterior(x, noise)
        self._fakes = [z.detach()]
        logits = self.decoder(z, layout)
        terms = self._reconstruction(logits, batch)
        terms["g_adv"] = L.g_loss(self.discriminator(z), cfg.adv_loss)
        if self._image_critic() is not None:
            terms |= self._image_g_terms(self._activate(logits, layout), layout, noise)
        loss = self._weighted(
            terms,
            {"pixel_l1": cfg.pixel_weight, "label_ce": cfg.label_weight,
             "g_adv": cfg.adv_weight, "g_image": cfg.adv_weight},
        )  # fmt: skip
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}

    def _posterior(self, x: torch.Tensor, noise: Noise) -> torch.Tensor:
        mu, logvar = self.encoder(self.appearance(x))
        return mu + (0.5 * logvar).exp() * noise(*self.latent_shape).to(mu.dtype)
