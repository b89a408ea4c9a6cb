"""VAE-GAN (Larsen et al. 2016): a VAE whose reconstruction error is measured in the
discriminator's feature space, plus the GAN loss on reconstructions and on samples
from the prior. The discriminator learns real against both. With the segmentation
discriminator its features are the U-Net's, and "real" means "the layout's class"."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medaug.models import losses as L
from medaug.models.base import Noise, Replay
from medaug.models.config import ModelConfig
from medaug.models.networks import image_discriminator
from medaug.models.registry import register
from medaug.models.vae import VAE


@register
class VAEGAN(VAE):
    name = "vaegan"
    phases: ClassVar[tuple[str, ...]] = ("generator", "discriminator")

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.discriminator = image_discriminator(config)

    def phase_modules(self, phase: str) -> list[nn.Module]:
        if phase == "generator":
            return [self.encoder, self.decoder]
        return [self.discriminator]

    #: measure reconstruction in the discriminator's feature space (Larsen et al.)
    feature_matching: ClassVar[bool] = True

    def losses(
        self, batch: dict[str, Any], phase: str, noise: Noise | None = None
    ) -> dict[str, torch.Tensor]:
        cfg, noise = self.config, self._noise(batch, noise)
        x = self.inputs(batch)
        if phase == "discriminator":
            fakes = self._fakes or self._fakes_of(x, noise)
            self._fakes = []
            return self._image_d_phase(self.discriminator, x, fakes, noise)
        layout = self.layout_of(x)
        z, kl = self.posterior_sample(x, noise)
        logits = self.decoder(z, layout)
        recon = self._activate(logits, layout)
        prior = self.decode(noise(*self.latent_shape), layout)
        # the reconstruction and its real input are augmented alike (replayed draws),
        # so their discriminator features stay comparable
        paired = Replay(noise)
        recon_verdict = self._discriminate(self.discriminator, recon, paired)
        prior_verdict = self._discriminate(self.discriminator, prior, noise)
        self._fakes = [recon.detach(), prior.detach()]
        terms = self._reconstruction(logits, batch)
        terms["kl"] = kl.mean()
        terms["g_adv"] = 0.5 * (self._g_adv(recon_verdict) + self._g_adv(prior_verdict))
        weights = {
            "pixel_l1": cfg.pixel_weight,
            "label_ce": cfg.label_weight,
            "kl": cfg.kl_weight,
            "g_adv": cfg.adv_weight,
        }
        if self.feature_matching:
            with torch.no_grad():
                real_features = self._discriminate(self.discriminator, x, paired.again()).features
            terms["feature_l1"] = L.feature_l1(list(recon_verdict.features), list(real_features))
            weights["feature_l1"] = cfg.feature_weight
        loss = self._weighted(terms | {"kl": terms["kl"] / self._voxels()}, weights)
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}

    def _fakes_of(self, x: torch.Tensor, noise: Noise) -> list[torch.Tensor]:
        with torch.no_grad():
            layout = self.layout_of(x)
            z, _ = self.posterior_sample(x, noise)
            return [self.decode(z, layout), self.decode(noise(*self.latent_shape), layout)]
