"""AAE (Makhzani et al. 2016): an autoencoder whose aggregated posterior is matched to
the N(0, I) prior by a latent-space discriminator instead of a KL term."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medaug.models import losses as L
from medaug.models.base import GenerativeModel, Noise
from medaug.models.config import ModelConfig
from medaug.models.networks import GaussianEncoder, decoder, latent_discriminator
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

    def phase_modules(self, phase: str) -> list[nn.Module]:
        if phase == "generator":
            return [self.encoder, self.decoder]
        return [self.discriminator]

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
            loss = L.d_loss(real, fake, cfg.adv_loss)
            return {"loss": loss, "d_adv": loss.detach(), "d_acc": L.d_accuracy(real, fake)}
        x = self.inputs(batch)
        z = self._posterior(x, noise)
        self._fakes = [z.detach()]
        terms = self._reconstruction(self.decoder(z, self.layout_of(x)), batch)
        terms["g_adv"] = L.g_loss(self.discriminator(z), cfg.adv_loss)
        loss = self._weighted(
            terms,
            {"pixel_l1": cfg.pixel_weight, "label_ce": cfg.label_weight, "g_adv": cfg.adv_weight},
        )
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}

    def _posterior(self, x: torch.Tensor, noise: Noise) -> torch.Tensor:
        mu, logvar = self.encoder(self.appearance(x))
        return mu + (0.5 * logvar).exp() * noise(*self.latent_shape).to(mu.dtype)
