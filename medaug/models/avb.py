"""AVB (Mescheder et al. 2017): adversarial variational Bayes. The posterior is
implicit, ``z = f(x, eps)``; the KL term of the ELBO is replaced by a critic
``T(x, z)`` trained to tell posterior pairs from prior pairs, whose optimum is
``log q(z|x) - log p(z)``. A mask-conditioned AVB may add OASIS's segmentation
discriminator over its decoded images (``discriminator="segmentation"``), trained in
the critic's phase."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medaug.models import losses as L
from medaug.models.base import GenerativeModel, Noise
from medaug.models.config import ModelConfig
from medaug.models.networks import ImplicitEncoder, PairCritic, decoder, image_discriminator
from medaug.models.registry import register


@register
class AVB(GenerativeModel):
    name = "avb"
    phases = ("generator", "discriminator")
    #: noise draws used to summarise the implicit posterior as (mu, logvar)
    moment_draws = 16

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.encoder = ImplicitEncoder(config)
        self.decoder = decoder(config)
        self.critic = PairCritic(config)
        if config.discriminator == "segmentation":
            self.image_disc = image_discriminator(config)

    def phase_modules(self, phase: str) -> list[nn.Module]:
        if phase == "generator":
            return [self.encoder, self.decoder]
        image = self._image_critic()
        return [self.critic] + ([image] if image is not None else [])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Moments of the implicit posterior over :attr:`moment_draws` noise draws."""
        x = self.appearance(x)
        k, b = self.moment_draws, x.shape[0]
        eps = torch.randn((k * b, *self.latent_shape), device=x.device, dtype=x.dtype)
        z = self.encoder(x.repeat(k, *[1] * (x.ndim - 1)), eps).view(k, b, -1)
        return z.mean(0), z.var(0).clamp_min(1e-8).log()

    def losses(
        self, batch: dict[str, Any], phase: str, noise: Noise | None = None
    ) -> dict[str, torch.Tensor]:
        cfg, noise = self.config, self._noise(batch, noise)
        joint = self.inputs(batch)
        x = self.appearance(joint)  # what the encoder and the critic see
        if phase == "discriminator":
            if self._fakes:
                z_q = self._fakes[0]
            else:
                with torch.no_grad():
                    z_q = self.encoder(x, noise(*self.latent_shape))
            self._fakes = []
            t_q = self.critic(x, z_q.detach())
            t_p = self.critic(x, noise(*self.latent_shape))
            # posterior pairs are the critic's "real" class: T -> log q - log p
            critic = L.d_loss(t_q, t_p, "nonsat")
            image = self._image_d_terms(batch, noise, z_q.detach())
            loss = critic + image.pop("image_loss") if image else critic
            return {"loss": loss, "d_adv": critic.detach(), "d_acc": L.d_accuracy(t_q, t_p),
                    **{k: v.detach() for k, v in image.items()}}  # fmt: skip
        z = self.encoder(x, noise(*self.latent_shape))
        self._fakes = [z.detach()]
        layout = self.layout_of(joint)
        logits = self.decoder(z, layout)
        terms = self._reconstruction(logits, batch)
        terms["kl"] = self.critic(x, z).float().mean()  # the critic's KL estimate, nats
        if self._image_critic() is not None:
            terms |= self._image_g_terms(self._activate(logits, layout), layout, noise)
        loss = self._weighted(
            terms | {"kl": terms["kl"] / self._voxels()},
            {"pixel_l1": cfg.pixel_weight, "label_ce": cfg.label_weight, "kl": cfg.kl_weight,
             "g_image": cfg.adv_weight},
        )  # fmt: skip
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}
