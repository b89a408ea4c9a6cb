"""VAE (Kingma & Welling 2014): Gaussian encoder, reparameterisation, decoder;
loss = reconstruction (pixel L1 + label cross-entropy) + KL to N(0, I)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medaug.models import losses as L
from medaug.models.base import GenerativeModel, Noise
from medaug.models.config import ModelConfig
from medaug.models.networks import GaussianEncoder, decoder
from medaug.models.registry import register


@register
class VAE(GenerativeModel):
    name = "vae"
    phases: ClassVar[tuple[str, ...]] = ("generator",)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.encoder = GaussianEncoder(config)
        self.decoder = decoder(config)

    def phase_modules(self, phase: str) -> list[nn.Module]:
        return [self.encoder, self.decoder]

    def posterior_sample(self, x: torch.Tensor, noise: Noise) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised ``z ~ q(z|x)`` and the per-sample KL (nats)."""
        mu, logvar = self.encoder(self.appearance(x))
        z = mu + (0.5 * logvar).exp() * noise(*self.latent_shape).to(mu.dtype)
        return z, L.kl_normal(mu, logvar)

    def losses(
        self, batch: dict[str, Any], phase: str, noise: Noise | None = None
    ) -> dict[str, torch.Tensor]:
        cfg, noise = self.config, self._noise(batch, noise)
        x = self.inputs(batch)
        z, kl = self.posterior_sample(x, noise)
        terms = self._reconstruction(self.decoder(z, self.layout_of(x)), batch)
        terms["kl"] = kl.mean()
        loss = self._weighted(
            terms | {"kl": terms["kl"] / self._voxels()},
            {"pixel_l1": cfg.pixel_weight, "label_ce": cfg.label_weight, "kl": cfg.kl_weight},
        )
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}
